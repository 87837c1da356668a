"""Search results: result.json per mode and epsilon (compact masks, calibration and test numbers,
the layer quantizer's trajectory) and the masks as safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CrossneuronError
from ..fsutil import atomic_write, write_json
from ..net import PredictiveNet
from .engine import EvalResult
from .plan import SitePlan, full_mask, plan_from_json, plan_json


def _pct(macs: int, images: int, denominator: int) -> float:
    return 100.0 * macs / (images * denominator)


def masks_json(net: PredictiveNet, plans: dict[int, SitePlan], sides: dict[int, int]) -> dict:
    """Per site name: block side and pieces [channel or null, block or null, pattern code]."""
    return {s.name: {"side": sides[s.index], "pieces": plan_json(plans.get(s.index, ()))} for s in net.sites}


def full_masks(net: PredictiveNet, data: dict) -> dict[int, torch.Tensor | None]:
    """Expand result.json's ``masks`` to full (C, Hp, Wp) masks for ``net``."""
    masks = data["masks"]
    unknown = set(masks) - {s.name for s in net.sites}
    if unknown:
        raise CrossneuronError(f"masks name sites this model does not have: {', '.join(sorted(unknown)[:3])}")
    out = {}
    for s in net.sites:
        entry = masks.get(s.name, {"side": net.patch_size, "pieces": []})
        shape = tuple(net.spatial(s).mask.shape)
        out[s.index] = full_mask(plan_from_json(entry["pieces"]), shape, net.patch_size, entry["side"])
    return out


def trajectory_json(net, result, base: EvalResult) -> list[dict]:
    units = result.units
    return [
        {
            "step": t.step,
            "stage": t.stage,
            "moved": None if t.moved is None else [net.sites[s].name for s in units[t.moved]],
            "calib_accuracy": t.result.accuracy,  # an upper bound where cut_short
            "cut_short": t.result.cut_short,
            "calib_drop": base.accuracy - t.result.accuracy,
            "macs_saved_pct_network": _pct(t.result.macs_saved, t.result.images, net.network_macs),
            "macs_saved_pct_sites": _pct(t.result.macs_saved, t.result.images, net.site_macs),
        }
        for t in result.trajectory
    ]


def export_masks(path: str | Path, net: PredictiveNet, masks: dict[int, torch.Tensor | None]) -> None:
    """Full masks by site name (sites without prediction are all True) as safetensors."""
    tensors = {
        s.name: (masks.get(s.index) if masks.get(s.index) is not None else torch.ones_like(net.spatial(s).mask))
        .cpu()
        .contiguous()
        for s in net.sites
    }
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CrossneuronError(f"{path} not found: pass a result.json written by `crossneuron optimize`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrossneuronError(f"{path} is corrupt: {exc}") from None
    if "masks" not in data or "patch_size" not in data:
        raise CrossneuronError(f"{path} is not a crossneuron result (no masks or patch_size)")
    return data


def write_result(path: str | Path, data: dict) -> None:
    write_json(path, data)
