"""``retrain``: fine-tune a checkpoint with a search's masks predicting, then measure it again.

Predicted positions pass no gradient (the Spatial layer's training path); everything else trains
normally, BatchNorm statistics included. The split is the source checkpoint's (same seed, same val
images). Output folder: a checkpoint (``model.safetensors``, ``meta.json``, ``metrics.json``; its
accuracies are with the masks on), ``retrain.json`` (before / after on the test split and the
calibration images) and ``result.json`` (the masks with the retrained numbers, usable by
``evaluate --masks``). ``research``: the search again on the retrained model, into ``search/``.

Drops are against the *original* model (0.20): the one a chain of retrainings began with
(``chain_original``: back from a checkpoint retrained with masks through its ``init`` to the first
that was not), without prediction. ``retrain.json``'s ``base_accuracy`` and ``original`` and the
result.json's ``*_base_accuracy`` / ``*_drop`` say so; each measurement's ``no_prediction_accuracy``
stays the measured network's own.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from .checkpoint import read_meta
from .context import open_checkpoint
from .errors import CrossneuronError
from .evaluate import correct_count, measure
from .fsutil import folder_lock, write_json
from .grow import grow_to
from .result import Result, attach_result, load_result, write_result
from .runfolder import calibration, check_images, optimize
from .search.options import SearchOptions
from .train import TrainConfig, check_teacher, train


def default_out(result_path: Path, result: Result) -> Path:
    """RUN_DIR/retrain-<mode>-eps-<e> for RUN_DIR/<mode>/eps-<e>/result.json (the report finds it there)."""
    return result_path.resolve().parents[2] / f"retrain-{result.mode}-eps-{result.eps:g}"


def _measure(model, ctx, result: Result, x, y, batch_size) -> dict:
    net = attach_result(model, ctx.spec.input_shape, result)
    r = measure(net, ctx.spec, x, y, None, batch_size, ctx.device)
    return {"accuracy": r.accuracy, "no_prediction_accuracy": r.base_accuracy, "drop": r.drop,
            "macs_saved_pct_network": r.macs_saved_pct_network, "macs_saved_pct_sites": r.macs_saved_pct_sites,
            "oracle_pct_network": r.oracle_pct_network, "mispredicted_rate": r.mispredicted_rate}  # fmt: skip


def chain_original(checkpoint_dir) -> Path:
    """The model a chain of retrainings began with: from ``checkpoint_dir`` back through ``init`` while the
    checkpoint was retrained with masks (meta ``masks``); a link that is gone (moved, deleted) or a
    loop ends the chain there. A checkpoint not retrained with masks is its own original."""
    path, seen = Path(checkpoint_dir).resolve(), set()
    while path not in seen:
        seen.add(path)
        meta = read_meta(path)
        if not meta.get("masks") or not meta.get("init"):
            break
        init = Path(meta["init"]).resolve()
        if not (init / "meta.json").is_file():
            break
        path = init
    return path


def _original_base(source, origin: Path, data: Result, images: dict, bs: int, data_root, other_data) -> dict:
    """The original model's no-prediction accuracy (%) on each named (x, y): from the masks' own record
    when they were searched on exactly that model, else measured (``source``: the retrained checkpoint's
    context, reused when it is the original)."""
    same = source.path.resolve() == origin
    ctx = source if same else open_checkpoint(origin, data_root, source.device, other_data=other_data)
    if Path(data.checkpoint).resolve() == origin and data.weights_hash == ctx.weights_hash:
        known = {"test": data.test_base_accuracy, "calib": data.calib_base_accuracy,
                 "check": data.check_base_accuracy}  # fmt: skip
        if all(known[k] is not None for k in images):
            return {k: known[k] for k in images}
    return {k: 100.0 * correct_count(ctx.model, x, y, ctx.spec, bs, ctx.device) / len(y)
            for k, (x, y) in images.items()}  # fmt: skip


def retrain(checkpoint_dir, result_path, out=None, epochs: int = 2, lr: float = 0.005, batch_size: int = 128,
            data_root=None, device: str = "cpu", resume: bool = False, quiet: bool = False, research: bool = False,
            engine: str = "fast", progress=None, other_data: bool = False, distill: float = 0.0,
            temperature: float = 4.0, predictability: float = 0.0, slack: float = 0.0,
            warmup: float = 0.0, teacher: str | None = None, precision: str = "fp32",
            order_seed: int | None = None, log: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    result_path = Path(result_path)
    if out is not None and Path(out).resolve() == Path(checkpoint_dir).resolve():
        raise CrossneuronError(f"--out {out} is the source checkpoint itself: retraining writes a new checkpoint, "
                               "choose another --out")  # fmt: skip
    data = load_result(result_path)
    ctx = open_checkpoint(checkpoint_dir, data_root, device, other_data=other_data)
    if data.val_hash not in (None, ctx.meta["val_hash"]):
        raise CrossneuronError(f"{result_path} was searched on another val split than {checkpoint_dir}'s")
    attach_result(ctx.model, ctx.spec.input_shape, data)  # refuse masks of another model before any work
    check_teacher(teacher, ctx.meta["dataset"], ctx.meta["num_classes"])  # and a teacher of other data
    out = Path(out) if out else default_out(result_path, data)
    meta = ctx.meta
    cfg = TrainConfig(model=meta["model"], dataset=meta["dataset"], width=meta["width"], epochs=epochs,
                      batch_size=batch_size, lr=lr, seed=meta["split_seed"], val_size=meta["val_size"],
                      device=device, init=str(ctx.path.resolve()), masks=str(result_path.resolve()),
                      distill=distill, temperature=temperature, predictability=predictability, slack=slack,
                      warmup=warmup, teacher=str(Path(teacher).resolve()) if teacher else None,
                      precision=precision, order_seed=order_seed)  # fmt: skip
    cfg.check()  # bad options: one line before any folder is made
    with folder_lock(out):  # one writer per folder (train, inside, takes the same lock again)
        t0 = time.perf_counter()
        metrics = train(cfg, out, data_root, resume=resume, quiet=quiet, log=log)
        seconds = time.perf_counter() - t0
        new = open_checkpoint(out, data_root, device, other_data=other_data)
        options = data.options
        x_cal, y_cal, _ = calibration(ctx, options["calib"], options["seed"])
        x_chk, y_chk, _ = check_images(ctx, options["calib"], options["seed"], data.check_images or 0)
        x_test, y_test = ctx.data("test")
        bs = options.get("batch_size", 500)
        origin = chain_original(ctx.path)
        images = {"test": (x_test, y_test), "calib": (x_cal, y_cal)}
        if len(y_chk):
            images["check"] = (x_chk, y_chk)
        base = _original_base(ctx, origin, data, images, bs, data_root, other_data)
        record = {
            "mode": data.mode,
            "eps": data.eps,
            "checkpoint": str(ctx.path.resolve()),
            "retrained": str(out.resolve()),
            "masks": str(result_path.resolve()),
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "distill": distill,
            "temperature": temperature,
            "teacher": cfg.teacher,  # None: the source checkpoint
            "predictability": predictability,
            "slack": slack,
            "warmup": warmup,
            "precision": precision,
            "order_seed": order_seed,
            "train_seconds": metrics["train_seconds"],
            "seconds": seconds,
            "original": str(origin),  # the drops' reference (chain_original)
            "base_accuracy": base["test"],  # test, original model, no prediction
            "base": base,  # the original's no-prediction accuracy on each set of images
            "before": {
                "test": _measure(ctx.model, ctx, data, x_test, y_test, bs),
                "calib": _measure(ctx.model, ctx, data, x_cal, y_cal, bs),
            },  # fmt: skip
            "after": {
                "test": _measure(new.model, new, data, x_test, y_test, bs),
                "calib": _measure(new.model, new, data, x_cal, y_cal, bs),
            },  # fmt: skip
        }
        if len(y_chk):
            for key, (model, c) in (("before", (ctx.model, ctx)), ("after", (new.model, new))):
                record[key]["check"] = _measure(model, c, data, x_chk, y_chk, bs)
        for key in ("before", "after"):
            for images_name, m in record[key].items():
                m["drop_vs_original"] = base[images_name] - m["accuracy"]
            record[key]["test_accuracy"] = record[key]["test"]["accuracy"]  # the report's key
        write_json(out / "retrain.json", record)
        after = record["after"]["test"]
        calib = record["after"]["calib"]
        write_result(out / "result.json", dataclasses.replace(
            data, checkpoint=str(out.resolve()), weights_hash=new.weights_hash, retrained_from=record["checkpoint"],
            calib_accuracy=calib["accuracy"], calib_base_accuracy=base["calib"],
            calib_drop=calib["drop_vs_original"], calib_macs_saved_pct_network=calib["macs_saved_pct_network"],
            **_check_fields(record["after"].get("check"), base.get("check")), test_accuracy=after["accuracy"],
            test_base_accuracy=base["test"],
            test_drop=after["drop_vs_original"], macs_saved_pct_network=after["macs_saved_pct_network"],
            macs_saved_pct_sites=after["macs_saved_pct_sites"], oracle_pct_network=after["oracle_pct_network"],
            mispredicted_rate=after["mispredicted_rate"], trajectory=[],
        ))  # fmt: skip
        if research:
            record["research"] = optimize(new, search_options(options), out / "search", engine, progress)
            write_json(out / "retrain.json", record)
        return record


def _check_fields(check: dict | None, base: float | None) -> dict:
    """result.json's check numbers from a measurement on the check images against the original's
    ``base`` (all None without one)."""
    if check is None:
        return {"check_accuracy": None, "check_base_accuracy": None, "check_drop": None}
    return {"check_accuracy": check["accuracy"], "check_base_accuracy": base, "check_drop": check["drop_vs_original"]}


def search_options(identity: dict) -> SearchOptions:
    """The options of a result's search from its ``options`` (as written by ``SearchOptions.identity``);
    options of earlier versions take their then defaults (``site_wide`` is gone: False was its default;
    ``combine`` defaulted to rank before 0.4, ``budget`` was net before 0.5, no ``verify`` means none)."""
    known = {f.name for f in dataclasses.fields(SearchOptions)}
    o = {k: v for k, v in identity.items() if k in known}
    if identity.get("site_wide"):
        raise CrossneuronError("this result was searched with --site-wide, which 0.4 retired: search it again")
    o.setdefault("combine", "rank")
    o.setdefault("budget", "net")  # before 0.5, the only rule
    o.setdefault("verify", 0)  # identity leaves verify out when there were none (0.11: the default is 1,000)
    o["ones"] = tuple(o["ones"]) if o.get("ones") else None
    return SearchOptions(**o)


def keep_better(original: Result, searched: Path, retrained: Path) -> tuple[str, Path]:
    """Which masks a round hands on, judged on calibration images only: the new search's (``searched``)
    or the ones the round retrained with, measured on the retrained network (``retrained``). Of those
    whose calibration drop against the *original* model is within its epsilon, the one saving more
    calibration MACs (the search on a tie); the search's when neither is."""
    candidates = [("searched", searched, load_result(searched)), ("retrained", retrained, load_result(retrained))]
    within = [c for c in candidates if original.calib_base_accuracy - c[2].calib_accuracy <= original.eps + 1e-9]
    if not within:
        return "searched", searched
    name, path, _ = max(within, key=lambda c: (c[2].calib_macs_saved_pct_network, c[0] == "searched"))
    return name, path


def rounds(checkpoint_dir, result_path, count: int, out=None, engine: str = "fast", progress=None,
           data_root=None, device: str = "cpu", other_data: bool = False, grow: bool = False,
           **train_options) -> dict:  # fmt: skip
    """Search-retrain rounds (``retrain --rounds N``): round k retrains the previous round's network with
    the previous round's masks (round 1: the source checkpoint and ``result_path``) into
    ``out/round-k``, then searches that network again (``round-k/search``, the result's mode and options)
    with the budget held against the *original* model: epsilon_k = epsilon - (the original's
    no-prediction calibration accuracy - round k's), at least 0. Distillation learns from the original
    network in every round (``teacher``), not from round k - 1's. Each round's numbers go to
    ``round-k/round.json``. The round hands on the better of the new search's masks and the ones it
    retrained with (``keep_better``, on calibration images), recorded as ``kept`` / ``chosen``; a
    finished round is never run again, so a killed run resumes where it
    stopped. ``grow`` (``--grow``): instead of a search from no prediction, round k grows the masks it
    retrained with (``grow.grow``, ``round-k/grow/result.json``) within epsilon itself of the original.
    Returns ``{"rounds": [...]}``, also written to ``out/rounds.json``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise CrossneuronError(f"--rounds must be a number of rounds >= 1, got {count!r}")
    result_path = Path(result_path)
    data = load_result(result_path)
    if out is None:
        first = default_out(result_path, data)
        out = first.with_name(first.name + "-rounds")
    out = Path(out)
    original = open_checkpoint(checkpoint_dir, data_root, device, other_data=other_data)
    options = search_options(data.options)
    x_test, y_test = original.data("test")
    done, ckpt, masks = [], Path(checkpoint_dir), result_path
    for k in range(1, count + 1):
        folder = out / f"round-{k}"
        path = folder / "round.json"
        if not path.is_file():
            if k > 1 and train_options.get("distill") and not train_options.get("teacher"):
                train_options = {**train_options, "teacher": checkpoint_dir}  # distil from the original, not round k-1
            record = retrain(ckpt, masks, out=folder, data_root=data_root, device=device, resume=True, quiet=True,
                             other_data=other_data, **train_options)  # fmt: skip
            new = open_checkpoint(folder, data_root, device, other_data=other_data)
            if grow:  # from the masks the network was trained with, eps itself against the original (grow.py)
                eps, found = data.eps, folder / "grow" / "result.json"
                if not found.is_file():  # written whole or not at all: a rerun after a kill reuses it
                    grow_to(found, new, load_result(folder / "result.json"), original, eps)
            else:
                lost = record["base"]["calib"] - record["after"]["calib"]["no_prediction_accuracy"]  # vs original
                eps = round(max(0.0, data.eps - lost), 2)
                searched = dataclasses.replace(options, eps=[eps], modes=[data.mode])
                optimize(new, searched, folder / "search", engine, progress)
                found = folder / "search" / data.mode / f"eps-{eps:g}" / "result.json"
            after = _measure(new.model, new, load_result(found), x_test, y_test, options.batch_size)
            base_test = record["base_accuracy"]  # the original's (chain_original)
            searched_numbers = {**after, "drop_vs_original": base_test - after["accuracy"]}
            kept, kept_path = keep_better(data, found, folder / "result.json")
            chosen = searched_numbers if kept == "searched" else record["after"]["test"]
            write_json(path, {
                "round": k, "checkpoint": str(folder.resolve()), "masks_in": str(Path(masks).resolve()),
                "masks_out": str(kept_path.resolve()), "kept": kept, "eps": data.eps, "eps_searched": eps,
                "search": "grow" if grow else "search",
                "original_test_accuracy": base_test,
                "retrained": {"test": record["after"]["test"], "calib": record["after"]["calib"]},
                "searched": searched_numbers,
                "chosen": {**chosen, "drop_vs_original": base_test - chosen["accuracy"]},
                "train_seconds": record["train_seconds"], "seconds": record["seconds"],
            })  # fmt: skip
        round_record = json.loads(path.read_text())
        done.append(round_record)
        ckpt, masks = folder, Path(round_record["masks_out"])
    summary = {"mode": data.mode, "eps": data.eps, "checkpoint": str(Path(checkpoint_dir).resolve()), "rounds": done}
    write_json(out / "rounds.json", summary)
    return summary
