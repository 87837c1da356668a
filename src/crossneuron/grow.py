"""Grow a retrained network's masks (``crossneuron grow``): search again from the masks it was trained with.

A network retrained with masks on adapts to them: on full-width ResNet-18/CIFAR-10 (session 23) the
retrained network is 88.2% right with its masks and 84.0% without any, so a search from no prediction
(SPEC 6, and ``retrain --rounds``) starts far below the budget. ``grow`` starts from the incumbent masks
instead and only makes sites predict more: a move clears one computed position of a site's pattern
(a 2-of-4 pattern becomes a 1-of-4 one inside it), so the site checks fewer positions and predicts more.

The budget is held against the *original* model (the one the first search ran on), with no prediction:
a grown set of masks must keep ``original - accuracy <= eps`` points on the calibration images and on
the verify images (both are searched on here; the check images and the test split are not). A pass
screens every move alone on the calibration images, then tries them in order of MACs gained per point
lost (a loss under one image counts as one image), each on top of those accepted so far, and keeps a
move when the whole set stays within the budget on both sets of images (one move per site per pass).
Passes repeat until one accepts nothing.

Masks that start outside the budget (a network retrained with more prediction than it could absorb) are
first repaired (0.20, ``repairs``): a move there computes one predicted position of a site's pattern again
(a site whose every position is computed stops predicting). Each repair is screened alone on the
calibration images; those that gain accuracy are tried by points gained per point of network MACs given
back, each on top of those taken, kept when the calibration accuracy rises, until the set is within the
budget on the calibration and verify images; then the passes above grow from there. Masks that no
repair brings within the budget are refused in one line (nothing written).

Only masks with one whole-site pattern per site (uniform-layer results) can grow; sites without
prediction stay so. The result.json it writes has the original model's accuracies as its base
(``*_base_accuracy``), so its drops, and a retraining's from it, are against the original model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

from .context import Context
from .errors import CrossneuronError
from .evaluate import correct_count, measure, plain_pass
from .fsutil import folder_lock
from .result import Result, apply_result, attach_result, write_result
from .runfolder import DEFAULT_CHECK, calibration, check_images, verify_images

DEFAULT_VERIFY = 1000


def site_codes(result: Result) -> dict[str, int]:
    """Per site name, the one pattern code tiled over the whole site; sites without prediction left out.
    Refuses masks of finer modes (per channel or per block) in one line."""
    codes = {}
    for name, entry in result.masks.items():
        pieces = entry["pieces"]
        if not pieces:
            continue
        if len(pieces) != 1 or pieces[0][0] is not None or pieces[0][1] is not None:
            raise CrossneuronError(f"grow needs one pattern per site (uniform-layer masks), but site '{name}' "
                                   f"has {len(pieces)} pieces (mode {result.mode})")  # fmt: skip
        codes[name] = pieces[0][2]
    return codes


def moves(codes: dict[str, int]) -> list[tuple[str, int]]:
    """Every (site, code) with one computed position of the site's pattern cleared (at least one stays)."""
    out = []
    for name, code in codes.items():
        bits = [1 << k for k in range(code.bit_length()) if code >> k & 1]
        if len(bits) > 1:
            out += [(name, code & ~bit) for bit in bits]
    return out


def repairs(codes: dict[str, int], patch_size: int) -> list[tuple[str, int]]:
    """Every (site, code) with one predicted position of the site's pattern computed again; a code with
    all ``patch_size``^2 positions computed means the site predicts nothing."""
    full = (1 << patch_size * patch_size) - 1
    return [(name, code | 1 << k) for name, code in codes.items() for k in range(patch_size * patch_size)
            if not code >> k & 1 and code != full]  # fmt: skip


def with_codes(result: Result, codes: dict[str, int], patch_size: int) -> Result:
    """``result`` with each named site's pattern replaced (its block side and threshold kept); a code with
    every one of ``patch_size``^2 positions computed takes the site's prediction away."""
    full = (1 << patch_size * patch_size) - 1
    masks = copy.deepcopy(result.masks)
    for name, code in codes.items():
        masks[name] = {**masks[name], "pieces": [] if code == full else [[None, None, code]]}
    return dataclasses.replace(result, masks=masks)


def _images(ctx: Context, result: Result):
    o = result.options
    calib, seed = int(o.get("calib", 1000)), int(o.get("seed", 0))
    x_cal, y_cal, cal_hash = calibration(ctx, calib, seed)
    x_ver, y_ver, ver_hash = verify_images(ctx, calib, int(o.get("verify") or DEFAULT_VERIFY), seed)
    x_chk, y_chk, chk_hash = check_images(ctx, calib, seed, result.check_images or DEFAULT_CHECK)
    return (x_cal, y_cal, cal_hash), (x_ver, y_ver, ver_hash), (x_chk, y_chk, chk_hash)


def check(ctx: Context, result: Result, original: Context, eps: float) -> dict[str, int]:
    """Refuse what cannot grow in one line (before any work or folder); returns ``site_codes(result)``."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 100:
        raise CrossneuronError(f"--eps must be a number of accuracy points from 0 to 100, got {eps!r}")
    for c in (ctx, original):
        if result.val_hash not in (None, c.meta["val_hash"]):
            raise CrossneuronError(f"{c.path} has another val split than the masks' search: grow on the same data")
    if original.meta["model"] != ctx.meta["model"] or original.meta["dataset"] != ctx.meta["dataset"]:
        raise CrossneuronError(f"--original {original.path} is {original.meta['model']} on {original.meta['dataset']}"
                               f", not {ctx.meta['model']} on {ctx.meta['dataset']}: pass the model the first "
                               "search ran on")  # fmt: skip
    return site_codes(result)


def grow(ctx: Context, result: Result, original: Context, eps: float, max_passes: int = 10,
         log: Callable[[str], None] | None = None) -> Result:  # fmt: skip
    """Grow ``result``'s masks on ``ctx``'s network within ``eps`` points of ``original``'s accuracy
    (module doc); returns the grown result, measured on calibration, check and test images."""
    codes = check(ctx, result, original, eps)
    say = log or (lambda _line: None)
    spec, device, bs = ctx.spec, ctx.device, int(result.options.get("batch_size", 500))
    (x_cal, y_cal, cal_hash), (x_ver, y_ver, ver_hash), (x_chk, y_chk, _) = _images(ctx, result)
    floor = {k: 100.0 * correct_count(original.model, x, y, spec, bs, device) / len(y)
             for k, (x, y) in {"calib": (x_cal, y_cal), "verify": (x_ver, y_ver)}.items()}  # fmt: skip
    net = attach_result(ctx.model, spec.input_shape, result)
    plain = {"calib": plain_pass(net, spec, x_cal, y_cal, bs, device),
             "verify": plain_pass(net, spec, x_ver, y_ver, bs, device)}  # fmt: skip

    p = int(result.options["patch_size"])

    def score(c: dict[str, int], images: str):
        apply_result(net, with_codes(result, c, p))
        x, y = (x_cal, y_cal) if images == "calib" else (x_ver, y_ver)
        return measure(net, spec, x, y, None, bs, device, plain=plain[images])

    now = score(codes, "calib")
    say(f"start: calib accuracy {now.accuracy:.2f}% (original {floor['calib']:.2f}%), "
        f"{now.macs_saved_pct_network:.2f}% of network MACs saved")  # fmt: skip
    trajectory = []

    def row(stage, name, code, cal, ver=None):  # ver: None where the verify images were not measured
        v = None if ver is None else ver.accuracy
        trajectory.append({"step": len(trajectory) + 1, "stage": stage, "moved": [name], "pattern": code,
                           "calib_accuracy": cal.accuracy, "calib_drop": floor["calib"] - cal.accuracy,
                           "verify_accuracy": v, "verify_drop": None if v is None else floor["verify"] - v,
                           "macs_saved_pct_network": cal.macs_saved_pct_network})  # fmt: skip
        say(f"{stage} {len(trajectory)}: {name} -> pattern {code}: calib {cal.accuracy:.2f}%, verify "
            f"{'-' if v is None else f'{v:.2f}%'}, {cal.macs_saved_pct_network:.2f}% of network MACs saved")

    within = floor["calib"] - now.accuracy <= eps + 1e-9
    if not within or floor["verify"] - score(codes, "verify").accuracy > eps + 1e-9:
        codes, now = _repair(codes, now, p, eps, floor, score, row, max_passes)

    def per_point_lost(r):  # MACs gained per point lost; None: no gain, or outside the budget alone
        gain, lost = r.macs_saved_pct_network - now.macs_saved_pct_network, now.accuracy - r.accuracy
        ok = gain > 0 and floor["calib"] - r.accuracy <= eps + 1e-9
        return gain / max(lost, 100.0 / len(y_cal)) if ok else None

    for _ in range(max_passes):
        ranked, alone = _ranked(moves(codes), codes, score, per_point_lost)
        accepted, moved = 0, set()
        for name, code in ranked:
            if name in moved:
                continue
            trial = {**codes, name: code}
            cal = score(trial, "calib") if accepted else alone[name, code]  # nothing taken yet: the screen's
            if floor["calib"] - cal.accuracy > eps + 1e-9:
                continue
            ver = score(trial, "verify")
            if floor["verify"] - ver.accuracy > eps + 1e-9:
                continue
            codes, now, accepted = trial, cal, accepted + 1
            moved.add(name)
            row("grow", name, code, cal, ver)
        if not accepted:
            break
    return _measured(ctx, original, with_codes(result, codes, p), eps, trajectory, floor, net, (cal_hash, ver_hash),
                     now, (x_chk, y_chk), len(y_ver), bs)  # fmt: skip


def _ranked(candidates, codes, score, rate):
    """Each candidate (site, code) scored alone on the calibration images (on top of ``codes``); those
    ``rate`` rates (not None) best first, ties by name and code; and every score, by candidate."""
    alone, rated = {}, []
    for name, code in candidates:
        r = alone[name, code] = score({**codes, name: code}, "calib")
        if (q := rate(r)) is not None:
            rated.append((q, name, code))
    return [(n, c) for _, n, c in sorted(rated, key=lambda t: (-t[0], t[1], t[2]))], alone


def _repair(codes, now, p, eps, floor, score, row, max_passes):
    """Bring masks outside the budget back inside it (module doc); returns (codes, calibration measurement)."""

    def per_point_given(r):  # accuracy gained per point of MACs given back; None: no gain
        gain, cost = r.accuracy - now.accuracy, now.macs_saved_pct_network - r.macs_saved_pct_network
        return gain / max(cost, 1e-9) if gain > 0 else None

    for _ in range(max_passes):
        ranked, alone = _ranked(repairs(codes, p), codes, score, per_point_given)
        taken, moved = 0, set()
        for name, code in ranked:
            if name in moved:
                continue
            trial = {**codes, name: code}
            cal = score(trial, "calib") if taken else alone[name, code]
            if cal.accuracy <= now.accuracy:
                continue
            codes, now, taken = trial, cal, taken + 1
            moved.add(name)
            ver = score(codes, "verify") if floor["calib"] - cal.accuracy <= eps + 1e-9 else None
            row("repair", name, code, cal, ver)
            if ver is not None and floor["verify"] - ver.accuracy <= eps + 1e-9:
                return codes, now
        if not taken:
            break
    raise CrossneuronError(f"no repair brings these masks within eps {eps:g} of the original (calibration "
                           f"{floor['calib'] - now.accuracy:.2f} points lower after repairs): retrain longer, "
                           "or grow at a larger --eps")  # fmt: skip


def _measured(ctx, original, grown: Result, eps, trajectory, floor, net, hashes, c, chk, n_ver, bs) -> Result:
    """The grown result with its numbers (``c``: its calibration measurement; check and test measured here),
    each against the original model."""
    spec, device = ctx.spec, ctx.device
    apply_result(net, grown)
    x_test, y_test = ctx.data("test")
    t = measure(net, spec, x_test, y_test, None, bs, device)
    k = measure(net, spec, *chk, None, bs, device) if len(chk[1]) else None
    base_test = 100.0 * correct_count(original.model, x_test, y_test, spec, bs, device) / len(y_test)
    base_chk = 100.0 * correct_count(original.model, *chk, spec, bs, device) / len(chk[1]) if k else None
    last = trajectory[-1] if trajectory else None
    return dataclasses.replace(
        grown, eps=float(eps), checkpoint=str(ctx.path.resolve()), weights_hash=ctx.weights_hash,
        val_hash=ctx.meta["val_hash"], calib_hash=hashes[0],
        options={**grown.options, "grow": {"original": str(original.path.resolve()), "from_eps": grown.eps}},
        calib_accuracy=c.accuracy, calib_base_accuracy=floor["calib"], calib_drop=floor["calib"] - c.accuracy,
        calib_macs_saved_pct_network=c.macs_saved_pct_network,
        check_accuracy=k.accuracy if k else None, check_base_accuracy=base_chk,
        check_drop=base_chk - k.accuracy if k else None, check_images=len(chk[1]) or None,
        test_accuracy=t.accuracy, test_base_accuracy=base_test, test_drop=base_test - t.accuracy,
        macs_saved_pct_network=t.macs_saved_pct_network, macs_saved_pct_sites=t.macs_saved_pct_sites,
        oracle_pct_network=t.oracle_pct_network, oracle_pct_sites=t.oracle_pct_sites,
        mispredicted_rate=t.mispredicted_rate, test_images=len(y_test), per_site=list(t.per_site),
        chosen_step=len(trajectory), trajectory=trajectory, retrained_from=None,
        verify=None if last is None else {"images": n_ver, "hash": hashes[1], "accuracy": last["verify_accuracy"],
                                          "base_accuracy": floor["verify"], "drop": last["verify_drop"]},
    )  # fmt: skip


def grow_to(path: str | Path, ctx: Context, result: Result, original: Context, eps: float,
            log: Callable[[str], None] | None = None) -> Result:  # fmt: skip
    """``grow`` and write the result to ``path`` (atomically; an existing file is never replaced)."""
    check(ctx, result, original, eps)
    path = Path(path)
    if path.exists():
        raise CrossneuronError(f"{path} already exists: choose another --out")
    with folder_lock(path.parent):  # creates the folder
        grown = grow(ctx, result, original, eps, log=log)
        if path.exists():
            raise CrossneuronError(f"{path} appeared while growing (another process?): choose another --out")
        write_result(path, grown)
    return grown
