"""The result of a search for one mode and epsilon: ``Result``, the schema of ``result.json``.

This module alone writes and reads result.json (``write_result``, ``load_result``) and turns a
result into masks on a net (``apply_result``); ``optimize`` makes results, ``retrain`` rewrites
them with the retrained numbers, ``evaluate --masks``, training with masks and the report read
them. Keys and their order are those result.json has had since 0.1.0.

Masks are stored compactly per site name: the block side and the pieces ``[channel or null, block
or null, pattern code]`` applied in order to an all-true mask (``search.plan``).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .errors import CrossneuronError
from .fsutil import atomic_write, write_json
from .macs import pct
from .net import PredictiveNet, attach
from .search.plan import SitePlan, block_grid, plan_from_json, plan_json, plan_mask
from .search.records import EvalResult
from .thresholds import apply_thresholds


@dataclass
class Result:
    mode: str
    eps: float
    checkpoint: str
    weights_hash: str | None
    val_hash: str | None
    calib_hash: str | None
    patch_size: int
    options: dict
    masks: dict  # site name -> {"side": int, "pieces": [[channel|None, block|None, code], ...]}
    calib_accuracy: float
    calib_base_accuracy: float
    calib_drop: float
    calib_macs_saved_pct_network: float | None  # None in results rewritten by retrain before 0.4
    check_accuracy: float | None  # on the check images (SPEC 5); None before 0.5 or without check images
    check_base_accuracy: float | None
    check_drop: float | None
    check_images: int | None
    check_hash: str | None
    test_accuracy: float
    test_base_accuracy: float
    test_drop: float
    macs_saved_pct_network: float
    macs_saved_pct_sites: float
    oracle_pct_network: float
    oracle_pct_sites: float
    mispredicted_rate: float
    test_images: int
    per_site: list[dict] = field(default_factory=list)
    chosen_step: int | None = None
    trajectory: list[dict] = field(default_factory=list)  # empty after retraining
    retrained_from: str | None = None  # the source checkpoint of a retrained result (else omitted)
    # --verify (0.10): the chosen step on the verify images (images, hash, accuracy, base_accuracy, drop,
    # lost; ``verify_json``); omitted without them
    verify: dict | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("retrained_from", "verify"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "result.json") -> Result:
        if not isinstance(data, dict):
            raise CrossneuronError(f"{where} is not a crossneuron result (a JSON object with masks and patch_size)")
        if "masks" not in data or "patch_size" not in data:
            raise CrossneuronError(f"{where} is not a crossneuron result (no masks or patch_size)")
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls)
                   if f.name not in data and f.default is MISSING and f.default_factory is MISSING]  # fmt: skip
        values = {k: v for k, v in data.items() if k in known}
        for name in missing:  # results of older versions may lack a number; it reads as None
            values[name] = None
        result = cls(**values)
        result.check(where)
        return result

    def check(self, where: str = "result.json") -> None:
        """Types and ranges of the fields every reader relies on (the masks' fit to a net: ``apply_result``)."""
        p = self.patch_size
        if isinstance(p, bool) or not isinstance(p, int) or not 2 <= p <= 5:
            raise CrossneuronError(f"{where}: patch_size must be an integer from 2 to 5, got {p!r}")
        if not isinstance(self.masks, dict):
            raise CrossneuronError(f"{where}: masks must be an object of site name -> side and pieces, got "
                                   f"{type(self.masks).__name__}")  # fmt: skip
        for name, entry in self.masks.items():
            _check_entry(where, name, entry, p)
        for key in ("eps", "calib_accuracy", "check_accuracy", "test_accuracy", "macs_saved_pct_network"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):  # fmt: skip
                raise CrossneuronError(f"{where}: {key} must be a finite number, got {value!r}")


def _check_entry(where: str, name: str, entry: Any, p: int) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("pieces"), list):
        raise CrossneuronError(f'{where}: masks[\'{name}\'] must be {{"side": S, "pieces": [...]}}')
    side = entry.get("side")
    if isinstance(side, bool) or not isinstance(side, int) or side < p or side % p:
        raise CrossneuronError(f"{where}: masks['{name}'] has block side {side!r}: it must be a multiple of p = {p}")
    codes = range(1, 2 ** (p * p) - 1)
    for piece in entry["pieces"]:
        ok = isinstance(piece, list) and len(piece) == 3 and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in piece
        ) and piece[2] is not None and piece[2] in codes and all(v is None or v >= 0 for v in piece[:2])  # fmt: skip
        if not ok:
            raise CrossneuronError(f"{where}: masks['{name}'] has a bad piece {piece!r}: expected [channel or null, "
                                   f"block or null, pattern code 1..{codes[-1]}]")  # fmt: skip


def write_result(path: str | Path, result: Result) -> None:
    write_json(path, result.to_json())


def load_result(path: str | Path) -> Result:
    path = Path(path)
    if path.is_dir():
        raise CrossneuronError(f"{path} is a folder: pass its result.json (e.g. {path / 'result.json'})")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CrossneuronError(f"{path} not found: pass a result.json written by `crossneuron optimize`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrossneuronError(f"{path} is corrupt: {exc}") from None
    return Result.from_json(data, str(path))


# -- masks -------------------------------------------------------------------------------------
def masks_json(net: PredictiveNet, plans: dict[int, SitePlan], sides: dict[int, int]) -> dict:
    """Per site name: block side and pieces [channel or null, block or null, pattern code], and the site's
    threshold where it has one (0.14, ``--zero-below``: a computed value at most this counts as zero)."""
    out = {}
    for s in net.sites:
        entry = {"side": sides[s.index], "pieces": plan_json(plans.get(s.index, ()))}
        if net.spatial(s).threshold > 0:
            entry["threshold"] = net.spatial(s).threshold
        out[s.name] = entry
    return out


def result_thresholds(result: Result) -> dict[str, float]:
    """Per site name: the threshold its masks were searched with (0: exactly zero, SPEC 4)."""
    return {name: float(entry.get("threshold", 0.0)) for name, entry in result.masks.items()}


def result_masks(net: PredictiveNet, result: Result) -> dict[int, torch.Tensor | None]:
    """The result's full (C, Hp, Wp) masks for ``net`` (None: no prediction), checked against it."""
    if net.patch_size != result.patch_size:
        raise CrossneuronError(f"the result is for p = {result.patch_size} but the net was attached with "
                               f"p = {net.patch_size}")  # fmt: skip
    unknown = set(result.masks) - {s.name for s in net.sites}
    if unknown:
        raise CrossneuronError(f"masks name sites this model does not have: {', '.join(sorted(unknown)[:3])}")
    out = {}
    for s in net.sites:
        entry = result.masks.get(s.name, {"side": net.patch_size, "pieces": []})
        shape = tuple(net.spatial(s).mask.shape)
        blocks = len(block_grid(shape, entry["side"]))
        for channel, block, _ in entry["pieces"]:
            if (channel is not None and channel >= shape[0]) or (block is not None and block >= blocks):
                raise CrossneuronError(
                    f"masks['{s.name}'] names channel {channel} / block {block}, but that site has {shape[0]} "
                    f"channels and {blocks} blocks of side {entry['side']}: a result of another model?"
                )
        out[s.index] = plan_mask(plan_from_json(entry["pieces"]), shape, net.patch_size, entry["side"])
    return out


def apply_result(net: PredictiveNet, result: Result) -> dict[int, torch.Tensor | None]:
    """Set every site's mask and threshold of ``net`` to the result's (no prediction where it has none);
    returns the masks."""
    masks = result_masks(net, result)
    for index, mask in masks.items():
        net.set_mask(index, mask)
    apply_thresholds(net, result_thresholds(result))
    return masks


def attach_result(model: torch.nn.Module, input_shape, result: Result) -> PredictiveNet:
    """``attach`` with the result's patch size, its masks applied."""
    net = attach(model, input_shape, result.patch_size)
    param = next(model.parameters(), None)
    if param is not None:
        net.to(param.device)
    apply_result(net, result)
    return net


def export_masks(path: str | Path, net: PredictiveNet, masks: dict[int, torch.Tensor | None]) -> None:
    """Full masks by site name (sites without prediction are all True) as safetensors; where a site has a
    threshold (``--zero-below``), the metadata's ``thresholds`` holds them all as JSON by site name."""
    tensors = {
        s.name: (masks.get(s.index) if masks.get(s.index) is not None else torch.ones_like(net.spatial(s).mask))
        .cpu()
        .contiguous()
        for s in net.sites
    }
    thresholds = net.thresholds()
    meta = {"thresholds": json.dumps(thresholds)} if any(thresholds.values()) else None
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def verify_json(held: tuple[EvalResult, dict[int, EvalResult]], step: int, images_hash: str) -> dict:
    """The chosen ``step``'s numbers on the verify images (``held``: ``audit.held_records``)."""
    base, r = held[0], held[1][step]
    return {"images": r.images, "hash": images_hash, "accuracy": r.accuracy, "base_accuracy": base.accuracy,
            "drop": base.accuracy - r.accuracy, "lost": r.lost}  # fmt: skip


def trajectory_json(net: PredictiveNet, units: list[list[int]], trajectory, base: EvalResult) -> list[dict]:
    """The layer quantizer's and refine's steps as result.json rows (calibration numbers)."""
    return [
        {
            "step": t.step,
            "stage": t.stage,
            "found_for_eps": t.eps,  # refine / milp: the epsilon whose round found it; null: any (0.16)
            "moved": None if t.moved is None else [net.sites[s].name for s in units[t.moved]],
            "calib_accuracy": t.result.accuracy,  # an upper bound where cut_short
            "cut_short": t.result.cut_short,
            "calib_drop": base.accuracy - t.result.accuracy,
            "calib_lost": t.result.lost,  # images right with no prediction, wrong here (a lower bound where cut_short)
            "macs_saved_pct_network": pct(t.result.macs_saved, t.result.images, net.network_macs),
            "macs_saved_pct_sites": pct(t.result.macs_saved, t.result.images, net.site_macs),
        }
        for t in trajectory
    ]


__all__ = ["Result", "apply_result", "attach_result", "load_result", "result_masks", "result_thresholds",
           "write_result"]
