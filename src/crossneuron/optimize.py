"""``optimize``: a search on a checkpoint's calibration images, written to a run folder.

Run folder: ``records.sqlite`` (every evaluation; resumable), ``<mode>/eps-<e>/result.json`` and
``masks.safetensors`` per mode and epsilon, ``<mode>/at-baseline/`` (the budget set to the diagonal
baseline's calibration drop), ``baseline.json`` (the diagonal at every site), ``summary.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .context import Context
from .errors import CrossneuronError
from .evaluate import measure
from .fsutil import folder_lock, output_folder, write_json
from .macs import pct
from .net import attach
from .patterns import diagonal
from .result import Result, export_masks, masks_json, trajectory_json, write_result
from .search.engine import NaiveEngine
from .search.fast import FastEngine
from .search.run import MODES, ModeResult, Search, SearchOptions, coupled_units
from .search.store import Store
from .splits import indices_hash, normalise

ENGINES = {"naive": NaiveEngine, "fast": FastEngine}


def _calibration_positions(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions in the val split of the ``size`` calibration images drawn with ``seed``."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def calibration(ctx: Context, size: int, seed: int):
    """``size`` val images chosen with ``seed`` (sorted positions within the val split)."""
    x, y = ctx.data("val")
    if size > len(y):
        raise CrossneuronError(f"calibration size {size} is larger than the val split ({len(y)} images)")
    idx = torch.from_numpy(_calibration_positions(len(y), size, seed))
    return x[idx], y[idx], indices_hash(ctx.split.val[idx])


def check_images(ctx: Context, size: int, seed: int):
    """SPEC 5's check images: the val images the calibration draw (``size``, ``seed``) leaves out."""
    x, y = ctx.data("val")
    keep = np.ones(len(y), dtype=bool)
    keep[_calibration_positions(len(y), size, seed)] = False
    idx = torch.from_numpy(np.flatnonzero(keep))
    return x[idx], y[idx]


def make_engine(name: str, ctx: Context, options: SearchOptions):
    if name not in ENGINES:
        raise CrossneuronError(f"unknown engine '{name}': choose {', '.join(ENGINES)}")
    x, y, calib_hash = calibration(ctx, options.calib, options.seed)
    net = attach(ctx.model, ctx.spec.input_shape, options.patch_size)
    coupled_units(net, options.couple)  # a bad --couple fails before the engine's base pass
    engine = ENGINES[name](net, normalise(x, ctx.spec).to(ctx.device), y.to(ctx.device), options.batch_size)
    return net, engine, calib_hash


def diagonal_baseline(search: Search, ctx: Context, options: SearchOptions, test_net, x_test, y_test) -> dict:
    """The 2018 diagonal pattern at every site: on the calibration images (the search's baseline
    record) and on the test split."""
    p = options.patch_size
    calib = search.baseline
    test = measure(test_net, ctx.spec, x_test, y_test, {s.index: diagonal(p) for s in test_net.sites},
                   options.batch_size, ctx.device)  # fmt: skip
    return {
        "pattern": "diagonal",
        "patch_size": p,
        "calib": {
            "accuracy": calib.accuracy,
            "drop": search.base.accuracy - calib.accuracy,
            "macs_saved_pct_network": pct(calib.macs_saved, calib.images, search.net.network_macs),
        },
        "test": test.as_dict(),
    }


def optimize(ctx: Context, options: SearchOptions, out: str | Path, engine_name: str = "naive", progress=None) -> dict:
    """Run the search and write its results; returns the summary (also in summary.json)."""
    options.check(len(ctx.split.val))
    out = output_folder(out, create=False)  # checked now, made once the options have passed
    net, engine, calib_hash = make_engine(engine_name, ctx, options)
    output_folder(out)
    with folder_lock(out):  # one writer per run folder
        identity = {
            "checkpoint": str(ctx.path.resolve()),
            "weights_hash": ctx.weights_hash,
            "val_hash": ctx.meta["val_hash"],
            "calib_hash": calib_hash,
            "options": options.identity(),
            "version": __version__,
        }
        store = Store(out / "records.sqlite", identity)
        t0 = time.perf_counter()
        search = Search(net, engine, store, options, progress)
        base = search.base
        x_test, y_test = ctx.data("test")
        test_net = attach(ctx.model, ctx.spec.input_shape, options.patch_size)
        baseline = None
        if search.baseline is not None:
            baseline = diagonal_baseline(search, ctx, options, test_net, x_test, y_test)
            write_json(out / "baseline.json", baseline)
        summary = {"base_calib_accuracy": base.accuracy, "calib_images": base.images, "baseline": baseline, "modes": {}}

        def choose(mode: ModeResult, eps: float, folder: Path) -> dict:
            """The trajectory's best configuration within ``eps``, measured on the test split and written."""
            step, plans = mode.best(base, eps)
            masks = {site: search.space.mask(site, plans.get(site, ())) for site in search.space.sites}
            test = measure(test_net, ctx.spec, x_test, y_test, masks, options.batch_size, ctx.device)
            result = Result(
                mode=mode.mode, eps=eps, checkpoint=identity["checkpoint"], weights_hash=ctx.weights_hash,
                val_hash=identity["val_hash"], calib_hash=calib_hash, patch_size=options.patch_size,
                options=options.identity(), masks=masks_json(net, plans, search.space.sides),
                calib_accuracy=step.result.accuracy, calib_base_accuracy=base.accuracy,
                calib_drop=base.accuracy - step.result.accuracy,
                calib_macs_saved_pct_network=pct(step.result.macs_saved, base.images, net.network_macs),
                test_accuracy=test.accuracy, test_base_accuracy=test.base_accuracy, test_drop=test.drop,
                macs_saved_pct_network=test.macs_saved_pct_network, macs_saved_pct_sites=test.macs_saved_pct_sites,
                oracle_pct_network=test.oracle_pct_network, oracle_pct_sites=test.oracle_pct_sites,
                mispredicted_rate=test.mispredicted_rate, test_images=test.images, per_site=list(test.per_site),
                chosen_step=step.step, trajectory=trajectory_json(net, mode.units, mode.trajectory, base),
            )  # fmt: skip
            write_result(folder / "result.json", result)
            export_masks(folder / "masks.safetensors", net, masks)
            keys = ("eps", "calib_accuracy", "calib_drop", "calib_macs_saved_pct_network", "test_accuracy", "test_drop",
                    "macs_saved_pct_network", "macs_saved_pct_sites", "oracle_pct_network")  # fmt: skip
            return {k: getattr(result, k) for k in keys}

        for result in search.run():
            info = summary["modes"][result.mode] = {"seconds": result.seconds, "eps": {}}
            if result.screen is not None:
                info["screen"] = result.screen
            for eps in options.eps:
                info["eps"][f"{eps:g}"] = choose(result, eps, out / result.mode / f"eps-{eps:g}")
            if baseline is not None:  # our saving at the diagonal baseline's accuracy: its calibration drop as budget
                info["at_baseline"] = choose(result, search.baseline_drop, out / result.mode / "at-baseline")
        summary["seconds"] = time.perf_counter() - t0
        summary["evaluations"] = store.count()
        write_json(out / "summary.json", summary)
        store.close()
        return summary


__all__ = ["MODES", "calibration", "check_images", "make_engine", "optimize"]
