"""``crossneuron compare RUN_DIR``: the field side by side on one checkpoint, one test split and one MAC
count (issue 19, item 5).

Rows, each with MACs saved (% of network MACs, test split) and the test accuracy drop in points beside
it, and the oracle (every true zero skipped) of the same network:

- **diagonal 2018**: the run's baseline.json;
- **search**: every mode of the run at every epsilon (result.json), and every retraining found under
  the run (retrain.json: its drop is against the original model);
- **ZAP** at every epsilon of the run (``crossneuron.zap``): predictors trained label-free on train
  images, one threshold chosen on the run's own calibration images under its own budget rule; its
  saving is given gross and net of the predictors' MACs (the row's number is the net one);
- **SnaPEA exact** (``crossneuron.snapea``): no accuracy change by construction; counted on the first
  ``snapea_images`` test images (it is slow: float64, channel by channel);
- **combined**: the diagonal, or the masks of the run's headline mode (the most MACs saved at the
  largest epsilon) at every epsilon, and SnaPEA on the positions they still
  compute, on the same test images; the spatial part's test drop is the row's drop (SnaPEA adds none).

Everything is written under RUN_DIR/compare/: ``zap.safetensors`` (the predictors), ``zap.json``,
``snapea.json``, ``compare.json`` and ``compare.md``. A finished part is kept and reused by a later call
with the same options, so a killed compare resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .context import open_checkpoint
from .errors import CrossneuronError
from .fsutil import atomic_write, folder_lock, output_folder, write_json
from .net import attach
from .patterns import diagonal
from .report.load import Run, _json, load_run, strategy
from .result import result_masks, result_thresholds
from .runfolder import calibration
from .search.budget import get_budget
from .snapea import measure as snapea_measure
from .splits import normalise
from .thresholds import apply_thresholds
from .zap import RATES, THRESHOLDS, Zap, pick, rate_grid, threshold_grid
from .zap import evaluate as zap_evaluate

DEFAULTS = {"zap_epochs": 3, "zap_images": 10000, "zap_lr": 0.03, "snapea_images": 100, "period": 1}


def _reuse(path: Path, options: dict) -> dict | None:
    """A part written earlier with the same options, or None."""
    if path.exists():
        data = _json(path)
        if data.get("options") == options:
            return data
    return None


def _context(run: Run, data_root, device: str):
    r = run.any_result()
    ctx = open_checkpoint(r.checkpoint, data_root, device)
    if ctx.weights_hash != r.weights_hash:
        raise CrossneuronError(f"{r.checkpoint} holds other weights than the run {run.path} was searched on")
    return ctx


def zap_part(run: Run, ctx, folder: Path, options: dict, log=print) -> dict:
    """Train (or reuse) the predictors; choose a threshold per epsilon; measure on the test split."""
    opts = {k: options[k] for k in ("zap_epochs", "zap_images", "zap_lr")}
    opts["patch_size"] = run.any_result().patch_size
    opts["seed"] = 0  # the predictors' initial weights and the train images drawn
    done = _reuse(folder / "zap.json", {**opts, "thresholds": list(THRESHOLDS), "rates": list(RATES)})
    if done:
        return done
    r0 = run.any_result()
    net = attach(ctx.model, ctx.spec.input_shape, r0.patch_size)
    weights = folder / "zap.safetensors"
    t0 = time.perf_counter()
    trained = _reuse(folder / "zap-train.json", opts) if weights.exists() else None
    if trained:
        zap, history, train_seconds = Zap.load(net, weights), trained["train_loss"], trained["train_seconds"]
    else:
        x, _ = ctx.data("train")
        n = min(opts["zap_images"], len(x))
        some = torch.from_numpy(np.sort(np.random.default_rng(0).permutation(len(x))[:n]))
        zap = Zap(net)
        history = zap.fit(x[some], ctx.spec, epochs=opts["zap_epochs"], lr=opts["zap_lr"], device=ctx.device, log=log,
                          state=folder / "zap-train.state")  # a killed training goes on from its last epoch
        train_seconds = time.perf_counter() - t0
        zap.save(weights)
        write_json(folder / "zap-train.json", {"options": opts, "train_loss": history, "train_seconds": train_seconds})
    o = r0.options
    xc, yc, _ = calibration(ctx, o["calib"], o["seed"])
    budget = get_budget(o.get("budget", "net"))
    x_test, y_test = ctx.data("test")
    grid = threshold_grid(zap, xc, yc, ctx.spec, budget, batch_size=o["batch_size"], device=ctx.device)
    rates = rate_grid(zap, xc, yc, ctx.spec, budget, batch_size=o["batch_size"], device=ctx.device)
    base, _, _ = zap_evaluate(zap, x_test, y_test, ctx.spec, None, o["batch_size"], ctx.device)
    measured = {}

    def at(eps: float, rows: list[dict], key: str, what: str) -> dict:
        """The grid point ``pick`` chooses at ``eps``, measured on the test split (each point once)."""
        point = pick(rows, eps, key)
        row = {"eps": eps, key: point}
        if point is not None:
            thresholds = next(r for r in rows if r[key] == point)["thresholds"]
            if (key, point) not in measured:
                measured[key, point] = zap_evaluate(zap, x_test, y_test, ctx.spec, thresholds, o["batch_size"],
                                                    ctx.device)  # fmt: skip
            res, counts, _ = measured[key, point]
            row.update(test_accuracy=res.accuracy, test_base_accuracy=base.accuracy,
                       test_drop=base.accuracy - res.accuracy, gross_saved_pct_network=counts.macs_saved_pct_network,
                       overhead_pct_network=counts.overhead_pct_network,
                       macs_saved_pct_network=counts.net_saved_pct_network,
                       mispredicted_rate=counts.mispredicted_rate)  # fmt: skip
        said = f", {row['macs_saved_pct_network']:.2f}% net at test drop {row['test_drop']:.2f}" if point is not None \
            else ", none within"  # fmt: skip
        log(f"ZAP ({what}) eps {eps:g}: {key} {point}{said}")
        return row

    rows = {f"{eps:g}": at(eps, grid, "threshold", "one threshold") for eps in run.eps}
    per_site = {f"{eps:g}": at(eps, rates, "rate", "per-site thresholds") for eps in run.eps}
    out = {"options": {**opts, "thresholds": list(THRESHOLDS), "rates": list(RATES)}, "pattern_code": zap.code,
           "train_loss": history, "train_seconds": train_seconds,
           "overhead_pct_network": 100.0 * zap.overhead_macs() / net.network_macs, "budget": budget.name,
           "calib_grid": grid, "eps": rows, "per_site": {"calib_grid": rates, "eps": per_site}}  # fmt: skip
    write_json(folder / "zap.json", out)
    return out


def snapea_part(run: Run, ctx, folder: Path, options: dict, log=print) -> dict:
    """SnaPEA exact alone, and combined with the diagonal and with each mode's masks at every epsilon."""
    opts = {"snapea_images": options["snapea_images"], "period": options["period"]}
    done = _reuse(folder / "snapea.json", opts)
    if done:
        return done
    r0 = run.any_result()
    p = r0.patch_size
    x, _ = ctx.data("test")
    x = normalise(x[: opts["snapea_images"]], ctx.spec).to(ctx.device)
    net = attach(ctx.model, ctx.spec.input_shape, p)
    t0 = time.perf_counter()
    alone = snapea_measure(net, x, opts["period"])
    out = {"options": opts, "images": len(x), "alone": alone.macs_skipped_pct_network,
           "eligible": sum(s.eligible for s in alone.sites), "sites": len(alone.sites),
           "not_eligible": {s.name: s.why for s in alone.sites if not s.eligible}, "combined": {}}  # fmt: skip
    log(f"SnaPEA exact alone: {out['alone']:.2f}% of network MACs on {len(x)} test images")
    configs = [("diagonal", {s.index: diagonal(p) for s in net.sites}, {})]
    mode = run.headline()[0]  # the mode saving the most at the largest epsilon, at every epsilon
    configs += [(f"{mode} eps {eps:g}", result_masks(net, res), result_thresholds(res))
                for eps, res in sorted(run.results[mode].items())]  # fmt: skip
    for name, masks, thresholds in configs:
        apply_thresholds(net, thresholds)
        for site in net.sites:
            net.set_mask(site, masks.get(site.index))
        net.reset_stats()
        both = snapea_measure(net, x, opts["period"])
        spatial = net.stats()
        out["combined"][name] = {"spatial": spatial.macs_saved_pct_network, "snapea": both.macs_skipped_pct_network,
                                 "total": spatial.macs_saved_pct_network + both.macs_skipped_pct_network,
                                 "oracle": spatial.oracle_pct_network}  # fmt: skip
        log(f"combined {name}: {out['combined'][name]['total']:.2f}%")
    for site in net.sites:
        net.set_mask(site, None)
    out["seconds"] = time.perf_counter() - t0
    write_json(folder / "snapea.json", out)
    return out


def _row(scheme: str, setting: str, saved: float | None, drop: float | None, note: str) -> dict:
    return {"scheme": scheme, "setting": setting, "macs_saved_pct_network": saved, "test_drop": drop, "note": note}


def table(run: Run, zap: dict | None, snapea: dict | None) -> dict:
    """Every scheme's row: MACs saved (% of network, test) and test drop, with notes."""
    r0 = run.any_result()
    rows = []
    if run.baseline:
        t = run.baseline["test"]
        rows.append(_row("diagonal 2018", f"p={r0.patch_size}", t["macs_saved_pct_network"], t["drop"],
                         "fixed pattern, every site"))  # fmt: skip
    budget = run.summary.get("budget", "net")
    for mode, by_eps in run.results.items():
        for eps, res in sorted(by_eps.items()):
            rows.append(_row(f"crossneuron {mode}", f"eps {eps:g} ({budget})", res.macs_saved_pct_network,
                             res.test_drop, f"{r0.options.get('optimizer', 'layer')} search"))  # fmt: skip
    for rec in run.retrain:
        after = rec["after"]["test"]
        drop = rec["base_accuracy"] - after["accuracy"]
        rows.append(_row(f"crossneuron {rec['mode']} retrained", f"eps {rec['eps']:g}", after["macs_saved_pct_network"],
                         drop, f"{strategy(rec)}; drop vs the original"))  # fmt: skip
    variants = [("ZAP", "threshold", (zap or {}).get("eps", {}))]
    variants.append(("ZAP per-site", "rate", (zap or {}).get("per_site", {}).get("eps", {})))
    for scheme, key, by_eps in variants:
        for eps, z in by_eps.items():
            if z[key] is None:
                rows.append(_row(scheme, f"eps {eps}", None, None, f"no {key} within the budget on calibration images"))
                continue
            note = f"gross {z['gross_saved_pct_network']:.2f} minus predictors {z['overhead_pct_network']:.2f}"
            if z["macs_saved_pct_network"] <= 0:  # costs more than it saves: a user would leave it off
                rows.append(_row(scheme, f"eps {eps}", None, None, f"does not pay within the budget: {key} {z[key]:g}, "
                                 f"{note} = {z['macs_saved_pct_network']:.2f} at test drop {z['test_drop']:.2f}"))
                continue
            rows.append(_row(scheme, f"eps {eps}, {key} {z[key]:g}", z["macs_saved_pct_network"], z["test_drop"],
                             note))  # fmt: skip
    if snapea:
        n = snapea["images"]
        note = f"first {n} test images; {snapea['eligible']} of {snapea['sites']} sites eligible"
        rows.append(_row("SnaPEA exact", f"period {snapea['options']['period']}", snapea["alone"], 0.0, note))
        drops = {"diagonal": run.baseline["test"]["drop"] if run.baseline else None}
        drops.update({f"{m} eps {e:g}": res.test_drop for m, by in run.results.items() for e, res in by.items()})
        for name, c in snapea["combined"].items():
            setting = name.split(" ", 1)[1] if " eps" in name else f"p={r0.patch_size}"
            note = f"first {n} test images: spatial {c['spatial']:.2f} + SnaPEA {c['snapea']:.2f}"
            rows.append(_row(f"combined: {name.split(' eps')[0]} + SnaPEA", setting, c["total"], drops.get(name), note))
    return {"checkpoint": r0.checkpoint, "test_images": r0.test_images, "test_base_accuracy": r0.test_base_accuracy,
            "oracle_pct_network": r0.oracle_pct_network, "rows": rows}  # fmt: skip


def markdown(cmp: dict) -> str:
    def num(v):
        return "-" if v is None else f"{v:.2f}"

    lines = [f"Checkpoint `{cmp['checkpoint']}`; test split {cmp['test_images']} images, no-prediction accuracy "
             f"{cmp['test_base_accuracy']:.2f}%; oracle {cmp['oracle_pct_network']:.2f}% of network MACs.", "",
             "| scheme | setting | MACs saved (% of network) | test drop (points) | note |",
             "|---|---|---:|---:|---|"]  # fmt: skip
    lines += [f"| {r['scheme']} | {r['setting']} | {num(r['macs_saved_pct_network'])} | {num(r['test_drop'])} | "
              f"{r['note']} |" for r in cmp["rows"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def compare(run_dir, data_root=None, device: str = "cpu", log=print, zap: bool = True, snapea: bool = True,
            **options) -> dict:  # fmt: skip
    """Measure the peers on the run's checkpoint and write RUN_DIR/compare/ (see the module)."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise CrossneuronError(f"unknown compare options: {', '.join(sorted(unknown))}")
    options = {**DEFAULTS, **options}
    for key in ("zap_epochs", "zap_images", "snapea_images", "period"):
        if isinstance(options[key], bool) or not isinstance(options[key], int) or options[key] < 1:
            raise CrossneuronError(f"--{key.replace('_', '-')} must be an integer >= 1, got {options[key]!r}")
    if not options["zap_lr"] > 0:
        raise CrossneuronError(f"--zap-lr must be > 0, got {options['zap_lr']!r}")
    run = load_run(run_dir)
    ctx = _context(run, data_root, device)
    folder = output_folder(run.path / "compare")
    with folder_lock(folder):
        z = zap_part(run, ctx, folder, options, log) if zap else None
        s = snapea_part(run, ctx, folder, options, log) if snapea else None
        cmp = table(run, z, s)
        write_json(folder / "compare.json", cmp)
        text = markdown(cmp)
        atomic_write(folder / "compare.md", lambda tmp: Path(tmp).write_text(text))
    return cmp
