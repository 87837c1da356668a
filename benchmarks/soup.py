"""A greedy weight soup of networks retrained on the same masks (issue 17, session 20).

    .venv/bin/python benchmarks/soup.py CKPT [CKPT ...] --masks RESULT --original CKPT --out DIR [--data-root D]

Wortsman et al. 2022 ("Model soups", greedy soup): networks fine-tuned from one start often lie in one
basin, and their weight average can be more accurate than any of them at no cost at inference. Each CKPT
is a network retrained from ``--original`` on RESULT's masks (``crossneuron retrain``, any strategy or
schedule). The ingredients are sorted by their accuracy with the masks on the *selection* images (RESULT's
calibration and verify images: what the search saw, never the check images or the test split); each is
added to the running uniform average where the average's selection accuracy does not fall. Networks
with BatchNorm get their running statistics again from the train images with the masks on
(``torch.optim.swa_utils.update_bn``). Every average is measured as it is saved (in float16 where the
ingredients are). The soup is a checkpoint (DIR): ``crossneuron evaluate --checkpoint
DIR --masks RESULT`` reproduces its numbers.

Printed: one Markdown table (every ingredient, each average tried, the soup) with accuracy with the masks
on the selection and check images and the test split, the test drop against the original without
prediction and the test MACs saved; written: DIR/soup.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from crossneuron import checkpoint
from crossneuron.context import open_checkpoint
from crossneuron.evaluate import measure
from crossneuron.fsutil import write_json
from crossneuron.result import attach_result, load_result
from crossneuron.runfolder import calibration, check_images, verify_images
from crossneuron.splits import batches


def average(states: list[dict]) -> dict:
    """The uniform average of state dicts (float tensors in float32; others, e.g. BatchNorm's
    ``num_batches_tracked``, from the first)."""
    return {k: (sum(s[k].float() for s in states) / len(states)) if v.is_floating_point() else v.clone()
            for k, v in states[0].items()}  # fmt: skip


def greedy(order: list, score) -> tuple[list, list]:
    """Wortsman et al.'s greedy soup: ``order`` best first; an ingredient joins where ``score`` of the
    soup with it is not below the soup's without it. Returns (members, every (members tried, score))."""
    members, best = [order[0]], score([order[0]])
    tried = [(list(members), best)]
    for item in order[1:]:
        s = score(members + [item])
        tried.append((members + [item], s))
        if s >= best:
            members, best = members + [item], s
    return members, tried


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="networks retrained on --masks from --original")
    ap.add_argument("--masks", type=Path, required=True, help="the result.json they were retrained on")
    ap.add_argument("--original", type=Path, required=True, help="the checkpoint they were retrained from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-root")
    args = ap.parse_args()
    result = load_result(args.masks)
    original = open_checkpoint(args.original, args.data_root)
    o = result.options
    x_sel, y_sel, _ = calibration(original, o["calib"], o["seed"])
    if o.get("verify"):
        xv, yv, _ = verify_images(original, o["calib"], o["verify"], o["seed"])
        x_sel, y_sel = torch.cat([x_sel, xv]), torch.cat([y_sel, yv])
    x_chk, y_chk, _ = check_images(original, o["calib"], o["seed"], result.check_images or 0)
    x_test, y_test = original.data("test")
    x_train, y_train = original.data("train")
    base = result.test_base_accuracy  # the original without prediction, as retrain.json has it
    ctxs = [open_checkpoint(c, args.data_root) for c in args.checkpoints]
    if any(c.meta["val_hash"] != original.meta["val_hash"] for c in ctxs):
        sys.exit("every checkpoint must share --original's val split (retrained from it)")
    model = ctxs[0].model
    states = {str(c.path): {k: v.detach().clone() for k, v in c.model.state_dict().items()} for c in ctxs}
    net = attach_result(model, original.spec.input_shape, result)

    half = ctxs[0].meta.get("dtype") == "float16"

    def load(members):  # measured as saved: rounded to float16 where the ingredients are
        state = average([states[m] for m in members])
        model.load_state_dict({k: v.half().float() if half and v.is_floating_point() else v for k, v in state.items()})
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            update_bn((xb for xb, _ in batches(x_train, y_train, original.spec, 500, "cpu")), net)

    cache = {}

    def numbers(members, split):
        key = (tuple(members), split)
        if key not in cache:
            load(members)
            x, y = {"selection": (x_sel, y_sel), "check": (x_chk, y_chk), "test": (x_test, y_test)}[split]
            r = measure(net, original.spec, x, y, None)
            cache[key] = {"accuracy": r.accuracy, "macs_saved_pct_network": r.macs_saved_pct_network,
                          "oracle_pct_network": r.oracle_pct_network}  # fmt: skip
        return cache[key]

    order = sorted(states, key=lambda m: numbers([m], "selection")["accuracy"], reverse=True)
    members, tried = greedy(order, lambda ms: numbers(ms, "selection")["accuracy"])
    rows = []
    for ms in [[m] for m in order[1:]] + [ms for ms, _ in tried]:
        splits = ("selection", "check", "test") if len(y_chk) else ("selection", "test")
        row = {"members": ms, **{s: numbers(ms, s) for s in splits}}
        row["test_drop"] = base - row["test"]["accuracy"]
        row["soup"] = ms == members
        rows.append(row)
    load(members)
    meta = {**ctxs[0].meta, "soup": members, "masks": str(args.masks.resolve()), "init": str(args.original.resolve()),
            "command": " ".join(sys.argv)}  # fmt: skip
    checkpoint.save(args.out, model, meta, half=half)
    write_json(args.out / "soup.json", {"masks": str(args.masks.resolve()), "original": str(args.original.resolve()),
                                        "original_test_accuracy": base, "selection_images": len(y_sel),
                                        "check_images": len(y_chk), "members": members, "rows": rows})  # fmt: skip
    names = {m: chr(ord("A") + i) for i, m in enumerate(order)}
    print("\n".join(f"{names[m]}: {m}" for m in order))
    print(f"\noriginal without prediction: {base:.2f}% on test\n")
    print("| average of | selection acc. | check acc. | test acc. | test drop | % network saved (test) | oracle |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        label = "+".join(names[m] for m in r["members"]) + (" **(soup)**" if r["soup"] else "")
        chk = f"{r['check']['accuracy']:.2f}" if "check" in r else "-"
        test = r["test"]
        print(f"| {label} | {r['selection']['accuracy']:.2f} | {chk} | {test['accuracy']:.2f} | {r['test_drop']:.2f} | "
              f"{test['macs_saved_pct_network']:.2f} | {test['oracle_pct_network']:.2f} |")


if __name__ == "__main__":
    main()
