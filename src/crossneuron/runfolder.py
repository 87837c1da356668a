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
from .audit import Held, audit_rows, held_records
from .context import Context
from .errors import CrossneuronError
from .evaluate import measure, plain_pass
from .fsutil import folder_lock, output_folder, write_json
from .macs import pct
from .net import attach
from .patterns import diagonal
from .result import Result, export_masks, masks_json, trajectory_json, verify_json, write_result
from .search.batched import BatchedEngine
from .search.engine import NaiveEngine
from .search.fast import FastEngine
from .search.options import DEFAULT_CHECK
from .search.ray_engine import RayBackend
from .search.run import MODES, ModeResult, Search, SearchOptions, coupled_units
from .search.store import Store, reusable_records
from .splits import indices_hash, normalise
from .thresholds import apply_thresholds, site_thresholds

ENGINES = {"naive": NaiveEngine, "fast": FastEngine, "batched": BatchedEngine}


def _val_order(n: int, seed: int) -> np.ndarray:
    """The seeded order of the val split's positions: calibration images from its front, check images
    from its back, so that the check images stay the same whatever the calibration size."""
    return np.random.default_rng(seed).permutation(n)


def _calibration_positions(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions in the val split of the ``size`` calibration images drawn with ``seed``."""
    return np.sort(_val_order(n, seed)[:size])


def check_positions(n: int, calib: int, seed: int, size: int = DEFAULT_CHECK) -> np.ndarray:
    """Sorted positions of the check images: the last ``size`` of the seeded order, fewer where the
    calibration images leave fewer (never one of them)."""
    size = max(0, min(size, n - calib))
    return np.sort(_val_order(n, seed)[n - size :]) if size else np.zeros(0, dtype=np.int64)


def calibration(ctx: Context, size: int, seed: int):
    """``size`` val images chosen with ``seed`` (sorted positions within the val split)."""
    x, y = ctx.data("val")
    if size > len(y):
        raise CrossneuronError(f"calibration size {size} is larger than the val split ({len(y)} images)")
    idx = torch.from_numpy(_calibration_positions(len(y), size, seed))
    return x[idx], y[idx], indices_hash(ctx.split.val[idx])


def check_images(ctx: Context, calib: int, seed: int, size: int = DEFAULT_CHECK):
    """SPEC 5's check images for a calibration draw (``calib``, ``seed``): images, labels and hash."""
    x, y = ctx.data("val")
    idx = torch.from_numpy(check_positions(len(y), calib, seed, size))
    return x[idx], y[idx], indices_hash(ctx.split.val[idx])


def verify_images(ctx: Context, calib: int, size: int, seed: int):
    """``--verify``: the ``size`` val images right after the calibration images in the seeded order (never
    calibration or check images): images, labels and hash."""
    x, y = ctx.data("val")
    idx = torch.from_numpy(np.sort(_val_order(len(y), seed)[calib : calib + size]))
    return x[idx], y[idx], indices_hash(ctx.split.val[idx])


def make_engine(name: str, ctx: Context, options: SearchOptions, backend: RayBackend | None = None):
    """The calibration images' engine ``name`` in this process, or with ``backend`` on Ray workers."""
    if name not in ENGINES:
        raise CrossneuronError(f"unknown engine '{name}': choose {', '.join(ENGINES)}")
    if backend is not None:
        backend.check()
    x, y, calib_hash = calibration(ctx, options.calib, options.seed)
    net = attach(ctx.model, ctx.spec.input_shape, options.patch_size)
    coupled_units(net, options.couple)  # a bad --couple fails before the engine's base pass
    x, y = normalise(x, ctx.spec).to(ctx.device), y.to(ctx.device)
    if options.zero_below:  # before any engine pass: Ray ships the net with its thresholds
        apply_thresholds(net, site_thresholds(net, x, options.zero_below, options.batch_size))
    if backend is not None:
        from .search.ray_engine import RayEngine

        return net, RayEngine(net, x, y, options.batch_size, backend, inner=name), calib_hash
    return net, ENGINES[name](net, x, y, options.batch_size), calib_hash


def diagonal_baseline(search: Search, ctx: Context, options: SearchOptions, test_net, test, check) -> dict:
    """The 2018 diagonal pattern at every site: on the calibration images (the search's baseline
    record), the check images and the test split (``test``, ``check``: images, labels and their no-prediction
    pass, ``evaluate.plain_pass``)."""
    p = options.patch_size
    calib = search.baseline
    masks = {s.index: diagonal(p) for s in test_net.sites}
    on_test = measure(test_net, ctx.spec, *test[:2], masks, options.batch_size, ctx.device, test[2])
    on_check = measure(test_net, ctx.spec, *check[:2], masks, options.batch_size, ctx.device, check[2]) \
        if len(check[1]) else None  # fmt: skip
    return {
        "pattern": "diagonal",
        "patch_size": p,
        "calib": {
            "accuracy": calib.accuracy,
            "drop": search.base.accuracy - calib.accuracy,
            "macs_saved_pct_network": pct(calib.macs_saved, calib.images, search.net.network_macs),
        },
        "check": None if on_check is None else {k: v for k, v in on_check.as_dict().items() if k != "per_site"},
        "test": on_test.as_dict(),
    }


REUSE_SAME = ("weights_hash", "val_hash", "calib_hash", "options.patch_size", "options.gt", "options.batch_size",
              "options.zero_below")  # absent (0) in identities before 0.14 and at 0


def optimize(ctx: Context, options: SearchOptions, out: str | Path, engine_name: str = "naive", progress=None,
             check: int = DEFAULT_CHECK, reuse: list[str | Path] = (),
             backend: RayBackend | None = None, audit: bool = False) -> dict:  # fmt: skip
    """Run the search and write its results; returns the summary (also in summary.json). ``check``: how many
    check images (SPEC 5) every result is also measured on (fewer where the calibration leaves fewer).
    ``reuse``: run folders (or their records.sqlite) on the same weights, calibration images, patch size,
    GT and batch size, whose exact records this search takes instead of evaluating the same masks again.
    ``backend``: evaluate on Ray workers (``search.ray_engine``) instead of in this process. ``audit``: also
    measure every configuration of each trajectory on the check images (``audit.py``, ``<mode>/audit.json``)."""
    options.check(len(ctx.split.val))
    if isinstance(check, bool) or not isinstance(check, int) or check < 0:
        raise CrossneuronError(f"--check must be a number of images >= 0, got {check!r}")
    out = output_folder(out, create=False)  # checked now, made once the options have passed
    net, engine, calib_hash = make_engine(engine_name, ctx, options, backend)
    try:
        identity = {
            "checkpoint": str(ctx.path.resolve()),
            "weights_hash": ctx.weights_hash,
            "val_hash": ctx.meta["val_hash"],
            "calib_hash": calib_hash,
            "options": options.identity(),
            "version": __version__,
        }
        reused = [row for other in reuse for row in reusable_records(other, identity, REUSE_SAME)]  # before any write
        output_folder(out)
        with folder_lock(out):  # one writer per run folder
            store = Store(out / "records.sqlite", identity)
            store.reuse(reused)
            t0 = time.perf_counter()
            test_net = attach(ctx.model, ctx.spec.input_shape, options.patch_size)
            apply_thresholds(test_net, net.thresholds())
            x_verify, y_verify, verify_hash = verify_images(ctx, options.calib, options.verify, options.seed) \
                if options.verify else (None, None, None)  # fmt: skip
            held = Held(test_net, ctx.spec, x_verify, y_verify, options.batch_size, ctx.device) \
                if options.verify else None  # fmt: skip
            search = Search(net, engine, store, options, progress, held if options.milp_verify else None)
            base = search.base
            x_test, y_test = ctx.data("test")
            # the check images leave room for the verify images (SPEC 5: the back of the same order)
            x_check, y_check, check_hash = check_images(ctx, options.calib + options.verify, options.seed, check)
            # the no-prediction passes, once per split (every measurement below compares with them)
            plain_test = plain_pass(test_net, ctx.spec, x_test, y_test, options.batch_size, ctx.device)
            plain_check = plain_pass(test_net, ctx.spec, x_check, y_check, options.batch_size, ctx.device) \
                if len(y_check) else None  # fmt: skip
            baseline = None
            if search.baseline is not None:
                baseline = diagonal_baseline(search, ctx, options, test_net, (x_test, y_test, plain_test),
                                             (x_check, y_check, plain_check))  # fmt: skip
                write_json(out / "baseline.json", baseline)
            summary = {"base_calib_accuracy": base.accuracy, "calib_images": base.images, "check_images": len(y_check),
                       "verify_images": options.verify, "budget": options.budget, "baseline": baseline,
                       "modes": {}}  # fmt: skip

            def choose(mode: ModeResult, eps: float, folder: Path, verified=None) -> dict:
                """The trajectory's best configuration within ``eps`` (on the verify images too where
                ``verified``), measured on the test split and written."""
                step, plans = mode.best(base, eps, verified)
                masks = {site: search.space.mask(site, plans.get(site, ())) for site in search.space.sites}
                test = measure(test_net, ctx.spec, x_test, y_test, masks, options.batch_size, ctx.device, plain_test)
                held = measure(test_net, ctx.spec, x_check, y_check, masks, options.batch_size, ctx.device,
                               plain_check) \
                    if len(y_check) else None  # fmt: skip
                result = Result(
                    mode=mode.mode, eps=eps, checkpoint=identity["checkpoint"], weights_hash=ctx.weights_hash,
                    val_hash=identity["val_hash"], calib_hash=calib_hash, patch_size=options.patch_size,
                    options=options.identity(), masks=masks_json(net, plans, search.space.sides),
                    calib_accuracy=step.result.accuracy, calib_base_accuracy=base.accuracy,
                    calib_drop=base.accuracy - step.result.accuracy,
                    calib_macs_saved_pct_network=pct(step.result.macs_saved, base.images, net.network_macs),
                    check_accuracy=held.accuracy if held else None,
                    check_base_accuracy=held.base_accuracy if held else None, check_drop=held.drop if held else None,
                    check_images=len(y_check), check_hash=check_hash if held else None,
                    test_accuracy=test.accuracy, test_base_accuracy=test.base_accuracy, test_drop=test.drop,
                    macs_saved_pct_network=test.macs_saved_pct_network, macs_saved_pct_sites=test.macs_saved_pct_sites,
                    oracle_pct_network=test.oracle_pct_network, oracle_pct_sites=test.oracle_pct_sites,
                    mispredicted_rate=test.mispredicted_rate, test_images=test.images, per_site=list(test.per_site),
                    chosen_step=step.step, trajectory=trajectory_json(net, mode.units, mode.trajectory, base),
                    verify=None if verified is None else verify_json(verified, step.step, verify_hash),
                )  # fmt: skip
                write_result(folder / "result.json", result)
                export_masks(folder / "masks.safetensors", net, masks)
                keys = ("eps", "calib_accuracy", "calib_drop", "calib_macs_saved_pct_network", "check_drop",
                        "test_accuracy", "test_drop", "macs_saved_pct_network", "macs_saved_pct_sites",
                        "oracle_pct_network")  # fmt: skip
                return {k: getattr(result, k) for k in keys} | ({} if verified is None else
                                                                {"verify_drop": result.verify["drop"]})

            for result in search.run():
                info = summary["modes"][result.mode] = {"seconds": result.seconds, "eps": {}}
                if result.screen is not None:
                    info["screen"] = result.screen
                verified = held_records(result, search.space, held) if held is not None else None
                for eps in options.eps:
                    info["eps"][f"{eps:g}"] = choose(result, eps, out / result.mode / f"eps-{eps:g}", verified)
                if audit and len(y_check):
                    rows = audit_rows(result, base, search.space, test_net, ctx.spec, x_check, y_check,
                                      options.batch_size, ctx.device)  # fmt: skip
                    write_json(out / result.mode / "audit.json", rows)
                if baseline is not None:  # our saving at the diagonal baseline's accuracy (its calibration drop)
                    at = out / result.mode / "at-baseline"
                    info["at_baseline"] = choose(result, search.baseline_drop, at, verified)
            summary["seconds"] = time.perf_counter() - t0
            summary["evaluations"] = store.count()
            write_json(out / "summary.json", summary)
            store.close()
            return summary
    finally:  # a Ray backend frees its workers now, not when the engine is collected
        if hasattr(engine, "close"):
            engine.close()


__all__ = ["MODES", "calibration", "check_images", "make_engine", "optimize", "verify_images"]
