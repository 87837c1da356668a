"""Every configuration a search's trajectory holds, measured again on images the search never saw
(``outcomes``): on the verify images for ``--verify`` (``held_records``: ``pick`` asks the budget rule on
them too), and on the check images (SPEC 5) for the audit (``optimize(audit=True)``, ``--audit``), so
that budget rules can be compared on unseen images.

A search picks, per epsilon, the trajectory step with the most MACs saved that its budget rule accepts
on the calibration images. With each step's check accuracy beside its calibration record, any other
rule's pick among the same steps (``replay``) can be read off without searching again: how far its
check drop strays above epsilon, and what it saves. The audit never feeds back into the search; the
check images stay unseen by every choice the search makes. Written to ``<mode>/audit.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import CrossneuronError
from .evaluate import right_images
from .macs import pct
from .search.budget import Budget
from .search.evaluator import config_hash
from .search.quantize import Step, pick
from .search.records import EvalResult
from .search.run import ModeResult


def bits(right: np.ndarray) -> str:
    """A bool array as hex of its packed bits (``unbits`` reads it back)."""
    return np.packbits(right).tobytes().hex()


def unbits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)


class Held:
    """Which images of (x, y), never evaluated by the search (verify or check images), a configuration
    gets right: one pass per distinct configuration (cached by its hash); ``base_right`` / ``base`` are
    no prediction's. ``record(plans, space)`` serves ``--milp-verify`` (the milp's rounds judged on the
    verify images too) and ``held_records`` (``pick``); ``right`` serves ``outcomes`` (the audit)."""

    def __init__(self, net, spec, x, y, batch_size: int = 500, device="cpu"):
        self.net, self.spec, self.x, self.y, self.batch_size, self.device = net, spec, x, y, batch_size, device
        self.net.to(device).eval()
        self._off()
        self.base_right = right_images(self.net, x, y, spec, batch_size, device)
        self.base = EvalResult(int(self.base_right.sum()), len(y), 0, 0, lost=0)
        self.cache: dict[str, np.ndarray] = {}

    def _off(self) -> None:
        for site in self.net.sites:
            self.net.enable(site, False)

    def right(self, plans, space) -> np.ndarray:
        key = config_hash(plans)
        if key not in self.cache:
            for site in self.net.sites:
                self.net.set_mask(site, space.mask(site.index, plans.get(site.index, ())))
                self.net.enable(site, True)
            self.cache[key] = right_images(self.net, self.x, self.y, self.spec, self.batch_size, self.device)
            self._off()
        return self.cache[key]

    def record(self, plans, space, macs_saved: int = 0) -> EvalResult:
        right = self.right(plans, space)
        return EvalResult(int(right.sum()), len(self.y), macs_saved, 0, lost=int((self.base_right & ~right).sum()))


def outcomes(mode: ModeResult, space, net, spec, x, y, batch_size: int = 500, device="cpu"):
    """Which images of (x, y) each distinct configuration of ``mode``'s trajectory gets right (steps cut
    short left out: no rule can pick them): the base's bool array, and per config hash its steps, bool
    array and MACs saved (% of network, on these images), in trajectory order."""
    held = Held(net, spec, x, y, batch_size, device)
    seen: dict[str, dict] = {}
    for t in mode.trajectory:
        if t.result.cut_short:
            continue
        plans = mode.plans_by_step[t.step]
        key = config_hash(plans)
        if key in seen:
            seen[key]["steps"].append(t.step)
            continue
        net.reset_stats()
        right = held.right(plans, space)
        seen[key] = {"steps": [t.step], "result": t.result, "stage": t.stage, "right": right,
                     "saved": net.stats().macs_saved_pct_network}  # fmt: skip
    return held.base_right, seen


def held_records(mode: ModeResult, space, held: Held) -> tuple[EvalResult, dict[int, EvalResult]]:
    """``--verify``: the base's record and each trajectory step's record (correct, lost) on the verify
    images, for ``quantize.pick`` to accept a step on them too (steps cut short left out: never picked).
    MACs saved stay the calibration records' (the pick's order)."""
    records = {t.step: held.record(mode.plans_by_step[t.step], space, t.result.macs_saved)
               for t in mode.trajectory if not t.result.cut_short}  # fmt: skip
    return held.base, records


def audit_rows(mode: ModeResult, base: EvalResult, space, net, spec, x, y, batch_size: int = 500,
               device="cpu") -> dict:  # fmt: skip
    """Each distinct configuration of ``mode``'s trajectory (``outcomes``) with its calibration record
    and, on (x, y), the check images: its accuracy, the images it loses and MACs saved, and which images
    it gets right (``check_right``, hex bits; ``unbits``), so that any later analysis (halves of the
    check images, a bootstrap) needs no model."""
    base_right, seen = outcomes(mode, space, net, spec, x, y, batch_size, device)
    base_check = int(base_right.sum())
    rows = []
    for key, entry in seen.items():
        r, right = entry["result"], entry["right"]
        hits = int(right.sum())
        rows.append({"config": key, "steps": entry["steps"], "stage": entry["stage"], "calib_correct": r.correct,
                     "calib_lost": r.lost, "calib_macs_saved_pct_network": pct(r.macs_saved, r.images,
                                                                               net.network_macs),
                     "check_correct": hits, "check_drop": 100.0 * (base_check - hits) / len(y),
                     "check_lost": int((base_right & ~right).sum()), "check_right": bits(right),
                     "check_macs_saved_pct_network": entry["saved"]})  # fmt: skip
    return {"mode": mode.mode, "calib_images": base.images, "calib_base_correct": base.correct,
            "check_images": len(y), "check_base_correct": base_check, "check_base_right": bits(base_right),
            "rows": rows}  # fmt: skip


def pool_audits(paths) -> dict[tuple[int, str], dict]:
    """Per (calibration size, mode): the audits at ``paths`` (audit.json files of runs on the same
    calibration and check images) with their configurations pooled, each once."""
    pools: dict[tuple[int, str], dict] = {}
    for path in paths:
        audit = json.loads(Path(path).read_text())
        pool = pools.setdefault((audit["calib_images"], audit["mode"]), {**audit, "rows": []})
        if any(pool[k] != audit[k] for k in ("calib_base_correct", "check_images", "check_base_correct")):
            raise CrossneuronError(f"{path}: not the same calibration or check images as the other audits")
        seen = {row["config"] for row in pool["rows"]}
        pool["rows"] += [row for row in audit["rows"] if row["config"] not in seen]
    return pools


def replay(audit: dict, budget: Budget, eps: float) -> dict:
    """The row ``budget`` would pick at ``eps`` among the audited configurations (as ``quantize.pick``
    does: the most MACs saved on the calibration images, ties to more correct, then earlier)."""
    images = audit["calib_images"]
    base = EvalResult(audit["calib_base_correct"], images, 0, 0, lost=0)
    steps = []
    for i, row in enumerate(audit["rows"]):
        macs = round(row["calib_macs_saved_pct_network"] * 1e6)  # an order-preserving integer of the saving
        steps.append(Step(i, None, (), EvalResult(row["calib_correct"], images, macs, 0, lost=row["calib_lost"])))
    return audit["rows"][pick(steps, base, eps, budget).step]  # a trajectory's no-prediction step: always one


__all__ = ["audit_rows", "bits", "held_records", "outcomes", "pool_audits", "replay", "unbits"]
