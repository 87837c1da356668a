"""ZAP (Shomron, Banner, Shkolnik and Weiser, ECCV 2020), as a baseline one can run (issue 19, item 2).

Per site a small depthwise predictor reads the positions a fixed mask computes and scores every other
position: depthwise 3x3 conv, BatchNorm, ReLU, depthwise 3x3 conv, BatchNorm (the paper's design). A
position the mask does not compute is computed only where its score is above a threshold; elsewhere it
is predicted zero and its MACs are saved. Unlike the Spatial layer (a patch is predicted only when all
its computed positions are zero), ZAP decides position by position.

- **Mask.** One p x p pattern (default the 2018 diagonal) tiled over every site's map from (0, 0); the
  computed positions are the mask's True ones, as everywhere in crossneuron.
- **Training** (label-free, the paper's): the network is frozen and runs without prediction; every
  predictor sees its site's true activation at the computed positions and learns the true zero map
  ``activation > 0`` at the others, with the mean squared error of its score clamped to [0, 1]. All
  sites train together from one forward pass per batch (Adam).
- **Thresholds** (ours: the paper tunes one threshold per operating point): one threshold shared by
  every site, the largest saving on a grid (``THRESHOLDS``) whose calibration record is within epsilon
  under the run's budget rule (``search.budget``). A shared threshold is meaningful because every score
  is trained toward the same 0/1 target.
- **MACs.** Saved: the MACs per output of every predicted position (per channel where slices differ).
  The predictor's own cost is charged against it, per image and site: the first depthwise conv on every
  position (9 C H W; BatchNorm folds into it) and the second only on the positions the mask does not
  compute (9 times their count). ``net_saved = saved - overhead``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CrossneuronError
from .fsutil import atomic_write
from .macs import pct
from .net import PredictiveNet
from .patterns import code_to_pattern, diagonal, pattern_to_code
from .precision import full_fp32
from .search.budget import TOLERANCE, Budget
from .search.records import EvalResult
from .splits import batches

# scores are trained toward 0 / 1 and clamped to [0, 1] in the loss: at or below 0 is "surely zero"
THRESHOLDS = (-1.0, -0.5, -0.25, -0.1, 0.0) + tuple(round(t, 2) for t in np.arange(0.05, 1.0001, 0.05))


def tiled(pattern: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H, W) bool: the p x p ``pattern`` repeated from (0, 0) and cut to H x W."""
    p = pattern.shape[0]
    return pattern.repeat(-(-h // p), -(-w // p))[:h, :w].clone()


class Predictor(nn.Module):
    """One site's ZAP: scores (N, C, H, W) from the activation's computed positions."""

    def __init__(self, channels: int, computed: torch.Tensor):
        super().__init__()
        c = channels
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.register_buffer("computed", computed.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = x * self.computed.to(x.dtype)
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(seen)))))

    def macs(self) -> int:
        """The predictor's MACs per image (see the module): 9 C H W + 9 C (positions not computed)."""
        c = self.conv1.in_channels
        h, w = self.computed.shape
        return 9 * c * h * w + 9 * c * int((~self.computed).sum())


def loss(scores: torch.Tensor, x: torch.Tensor, computed: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``clamp(scores, 0, 1)`` against ``x > 0`` over the positions not computed."""
    free = (~computed).to(x.dtype).expand_as(x)
    err = (scores.clamp(0, 1) - (x > 0).to(x.dtype)) ** 2
    return (err * free).sum() / free.sum().clamp_min(1)


@dataclass(frozen=True)
class ZapCounts:
    """Totals over ``images`` since the predictors started counting."""

    images: int
    network_macs: int  # per image
    macs_saved: int  # summed over the images (gross: the predictors' cost not taken off)
    overhead_macs: int  # per image, all predictors
    predicted: int
    mispredicted: int

    @property
    def macs_saved_pct_network(self) -> float:
        return pct(self.macs_saved, self.images, self.network_macs)

    @property
    def overhead_pct_network(self) -> float:
        return pct(self.overhead_macs, 1, self.network_macs)

    @property
    def net_saved_pct_network(self) -> float:
        return self.macs_saved_pct_network - self.overhead_pct_network

    @property
    def mispredicted_rate(self) -> float:
        return pct(self.mispredicted, 1, self.predicted)


class Zap(nn.Module):
    """Predictors for every site of ``net``; they act through hooks on its Spatial layers, which must
    not predict themselves (their masks stay all True)."""

    def __init__(self, net: PredictiveNet, pattern: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        p = net.patch_size
        pattern = diagonal(p) if pattern is None else torch.as_tensor(pattern, dtype=torch.bool)
        if pattern.shape != (p, p):
            raise CrossneuronError(
                f"the ZAP pattern must be {p}x{p} (the net's patch size), got {tuple(pattern.shape)}"
            )
        if bool(pattern.all()) or not bool(pattern.any()):
            raise CrossneuronError("the ZAP pattern must compute some positions and leave some to predict")
        object.__setattr__(self, "net", net)  # not a submodule: the predictors' state is theirs alone
        self.code = pattern_to_code(pattern)
        with torch.random.fork_rng(devices=[]):  # the predictors' initial weights depend on ``seed`` alone
            torch.manual_seed(seed)
            self.predictors = nn.ModuleList(Predictor(s.shape[0], tiled(pattern, *s.shape[1:])) for s in net.sites)
        self._macs = [torch.tensor(s.per_channel, dtype=torch.int64) for s in net.sites]

    @property
    def pattern(self) -> torch.Tensor:
        return code_to_pattern(self.code, self.net.patch_size)

    def overhead_macs(self) -> int:
        return sum(pr.macs() for pr in self.predictors)

    # -- training ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _capturing(self):
        seen: dict[int, torch.Tensor] = {}
        handles = [self.net.spatial(s).register_forward_pre_hook(
            lambda layer, args, i=s.index: seen.__setitem__(i, args[0].detach())) for s in self.net.sites]  # fmt: skip
        try:
            yield seen
        finally:
            for h in handles:
                h.remove()

    def fit(self, x: torch.Tensor, spec, epochs: int = 3, lr: float = 0.03, batch_size: int = 128,
            device: str = "cpu", seed: int = 0, log=None, state=None) -> list[float]:  # fmt: skip
        """Train every predictor on images ``x`` (labels unused); returns the mean loss of each epoch.
        ``state``: a file that holds the training after each epoch (predictors, Adam, the shuffling
        generator); a fit given the same file, images and options goes on from the last finished epoch
        to the same weights an uninterrupted fit reaches; the file is removed once the fit is done."""
        if epochs < 1:
            raise CrossneuronError(f"ZAP epochs must be >= 1, got {epochs}")
        self._check_no_masks()
        self.to(device).train()
        self.net.to(device).eval()
        opt = torch.optim.Adam(self.predictors.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        history: list[float] = []
        labels = torch.zeros(len(x), dtype=torch.int64)
        fingerprint = [len(x), float(x.float().sum()), epochs, lr, batch_size, seed, self.code]
        if state is not None and Path(state).exists():
            history = self._resume(Path(state), opt, g, fingerprint)
            if log and history:
                log(f"ZAP: resumed after epoch {len(history)}/{epochs}")
        for epoch in range(len(history), epochs):
            total, steps = 0.0, 0
            for xb, _ in batches(x, labels, spec, batch_size, device, shuffle=g):
                with torch.no_grad(), self._capturing() as seen:
                    self.net(xb)
                term = sum(loss(pr(seen[i]), seen[i], pr.computed) for i, pr in enumerate(self.predictors))
                opt.zero_grad()
                term.backward()
                opt.step()
                total, steps = total + float(term.detach()) / len(self.predictors), steps + 1
            history.append(total / steps)
            if state is not None:
                snapshot = {"predictors": self.state_dict(), "adam": opt.state_dict(), "shuffle": g.get_state(),
                            "history": history, "fingerprint": fingerprint}  # fmt: skip
                atomic_write(state, lambda tmp, s=snapshot: torch.save(s, tmp))
            if log:
                log(f"ZAP epoch {epoch + 1}/{epochs}: mean loss per site {history[-1]:.4f}")
        self.eval()
        if state is not None:
            Path(state).unlink(missing_ok=True)
        return history

    def _resume(self, state: Path, opt, g: torch.Generator, fingerprint: list) -> list[float]:
        """Load a training snapshot into the predictors, ``opt`` and ``g``; its epochs' losses ([] where
        it was made for other images or options: the fit starts over)."""
        try:
            snap = torch.load(state, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable snapshot is one clear line
            raise CrossneuronError(f"{state} is corrupt ({type(exc).__name__}); delete it to train from the start"
                                   ) from None  # fmt: skip
        if snap.get("fingerprint") != fingerprint:
            return []
        self.load_state_dict(snap["predictors"])
        opt.load_state_dict(snap["adam"])
        g.set_state(snap["shuffle"])
        return list(snap["history"])

    def _check_no_masks(self) -> None:
        if any(self.net.spatial(s).predicting for s in self.net.sites):
            raise CrossneuronError("ZAP runs on a net without spatial masks: set every mask to None first")

    # -- prediction --------------------------------------------------------------------------
    @contextlib.contextmanager
    def predicting(self, threshold: float | Sequence[float]):
        """Within the block the net's sites follow ZAP at ``threshold`` (one for every site, or one per
        site in site order); yields a function returning the counts so far."""
        per_site = [threshold] * len(self.net.sites) if isinstance(threshold, int | float) else list(threshold)
        if len(per_site) != len(self.net.sites):
            raise CrossneuronError(f"{len(per_site)} ZAP thresholds for {len(self.net.sites)} sites")
        self._check_no_masks()
        self.eval()
        dev = self.net.spatial(self.net.sites[0]).mask.device
        self.to(dev)
        counts = torch.zeros(3, dtype=torch.int64, device=dev)  # MACs saved, predicted, mispredicted
        images = [0]
        macs = [m.to(dev) for m in self._macs]

        def hook(layer, args, out, i):
            x = args[0]
            pr = self.predictors[i]
            with torch.no_grad():
                drop = ~pr.computed & (pr(x) <= per_site[i])  # (N, C, H, W)
                counts[0] += (drop.sum((0, 2, 3)) * macs[i]).sum()
                counts[1] += drop.sum()
                counts[2] += (drop & (x != 0)).sum()
                if i == 0:
                    images[0] += x.shape[0]
            return out.masked_fill(drop, 0)

        handles = [self.net.spatial(s).register_forward_hook(
            lambda layer, args, out, i=s.index: hook(layer, args, out, i)) for s in self.net.sites]  # fmt: skip

        def read() -> ZapCounts:
            saved, predicted, wrong = counts.tolist()
            return ZapCounts(images=images[0], network_macs=self.net.network_macs, macs_saved=saved,
                             overhead_macs=self.overhead_macs(), predicted=predicted, mispredicted=wrong)  # fmt: skip

        try:
            yield read
        finally:
            for h in handles:
                h.remove()

    # -- files -------------------------------------------------------------------------------
    def save(self, path) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"pattern_code": str(self.code), "patch_size": str(self.net.patch_size)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, net: PredictiveNet, path) -> Zap:
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one clear line
            raise CrossneuronError(f"cannot read ZAP predictors {path}: {e}; delete it to train them again") from None
        if int(meta.get("patch_size", -1)) != net.patch_size:
            raise CrossneuronError(f"ZAP predictors {path} were trained for another patch size; delete it")
        zap = cls(net, code_to_pattern(int(meta["pattern_code"]), net.patch_size))
        try:
            zap.load_state_dict(tensors)
        except RuntimeError:
            raise CrossneuronError(f"ZAP predictors {path} do not fit this network's sites; delete it") from None
        return zap.eval()


@full_fp32()
@torch.inference_mode()
def evaluate(zap: Zap, x, y, spec, threshold: float | Sequence[float] | None, batch_size: int = 500,
             device: str = "cpu") -> tuple[EvalResult, ZapCounts | None, torch.Tensor]:  # fmt: skip
    """Top-1 record of the net on (x, y) with ZAP at ``threshold`` (None: no prediction), paired flips
    against no prediction in ``lost``; also the counts and the per-image right/wrong vector."""
    net = zap.net.to(device).eval()
    rights = []
    with contextlib.ExitStack() as stack:
        read = stack.enter_context(zap.predicting(threshold)) if threshold is not None else None
        for xb, yb in batches(x, y, spec, batch_size, device):
            rights.append((net(xb).argmax(1) == yb).cpu())
        counts = read() if read else None
    right = torch.cat(rights)
    return EvalResult(correct=int(right.sum()), images=len(right),
                      macs_saved=counts.macs_saved if counts else 0,
                      mispredicted=counts.mispredicted if counts else 0), counts, right  # fmt: skip


def with_flips(result: EvalResult, right: torch.Tensor, base_right: torch.Tensor) -> EvalResult:
    """``result`` with its lost-image count against the base's per-image outcomes."""
    lost = int((base_right & ~right).sum())
    return EvalResult(correct=result.correct, images=result.images, macs_saved=result.macs_saved,
                      mispredicted=result.mispredicted, lost=lost)  # fmt: skip


def _grid(zap: Zap, x, y, spec, budget: Budget, points: list[tuple[dict, float | list[float]]], batch_size: int,
          device: str) -> list[dict]:  # fmt: skip
    """The calibration record of each grid point (its fields, its thresholds) on (x, y): accuracy, drop,
    lost images, the budget rule's charge, MACs saved (gross and net of the predictors)."""
    base, _, base_right = evaluate(zap, x, y, spec, None, batch_size, device)
    base = with_flips(base, base_right, base_right)
    rows = []
    for fields, thresholds in points:
        r, counts, right = evaluate(zap, x, y, spec, thresholds, batch_size, device)
        r = with_flips(r, right, base_right)
        rows.append({**fields, "thresholds": thresholds, "accuracy": r.accuracy, "drop": base.accuracy - r.accuracy,
                     "lost": r.lost, "charge": budget.charge(r, base),
                     "macs_saved_pct_network": counts.macs_saved_pct_network,
                     "net_saved_pct_network": counts.net_saved_pct_network})  # fmt: skip
    return rows


def threshold_grid(zap: Zap, x, y, spec, budget: Budget, thresholds=THRESHOLDS, batch_size: int = 500,
                   device: str = "cpu") -> list[dict]:  # fmt: skip
    """Every grid threshold's calibration record on (x, y), one threshold for all sites (``_grid``)."""
    return _grid(zap, x, y, spec, budget, [({"threshold": t}, t) for t in thresholds], batch_size, device)


def pick(rows: list[dict], eps: float, key: str = "threshold"):
    """The grid point (its ``key``) with the largest saving whose charge is within ``eps`` (None where none
    is; the smaller point on a tie)."""
    ok = [r for r in rows if r["charge"] <= eps + TOLERANCE]
    return max(ok, key=lambda r: (r["macs_saved_pct_network"], -r[key]))[key] if ok else None


RATES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
_BINS = torch.linspace(-4.0, 4.0, 8001)


@full_fp32()
@torch.inference_mode()
def miss_rate_thresholds(zap: Zap, x, spec, rates=RATES, batch_size: int = 500,
                         device: str = "cpu") -> dict[float, list[float]]:  # fmt: skip
    """Per-site thresholds from one pass without prediction over images ``x``: for each rate r, each site's
    threshold is the largest grid value (steps of 0.001 in [-4, 4]) at or below which lie at most a
    fraction r of its scores at true non-zero positions it would predict. Every site then mispredicts
    about the same share of its non-zeros (on images like ``x``; upstream prediction shifts it a little)."""
    net = zap.net.to(device).eval()
    zap.to(device).eval()
    hist = torch.zeros(len(zap.predictors), len(_BINS) + 1, dtype=torch.int64)
    with zap._capturing() as seen:
        for xb, _ in batches(x, torch.zeros(len(x), dtype=torch.int64), spec, batch_size, device):
            net(xb)
            for i, pr in enumerate(zap.predictors):
                a = seen[i]
                scores = pr(a)[(a > 0) & ~pr.computed.expand_as(a)].cpu()
                hist[i] += torch.bincount(torch.bucketize(scores, _BINS), minlength=len(_BINS) + 1)
    cdf = hist.cumsum(1).double() / hist.sum(1, keepdim=True).clamp_min(1)
    out = {}
    for r in rates:
        # bucket k holds scores in (BINS[k-1], BINS[k]]: predicting "score <= BINS[k]" misses cdf[k] of them
        under = [int((row[:-1] <= r).sum()) for row in cdf]  # grid points whose share is at most r
        out[r] = [float(_BINS[m - 1]) if m else float(_BINS[0]) - 1.0 for m in under]
    return out


def rate_grid(zap: Zap, x, y, spec, budget: Budget, rates=RATES, batch_size: int = 500,
              device: str = "cpu") -> list[dict]:  # fmt: skip
    """``threshold_grid`` for per-site thresholds at equal miss rates (``miss_rate_thresholds`` on the
    same images): every rate's calibration record, with its thresholds."""
    per_rate = miss_rate_thresholds(zap, x, spec, rates, batch_size, device)
    return _grid(zap, x, y, spec, budget, [({"rate": r}, t) for r, t in per_rate.items()], batch_size, device)


def choose_threshold(zap: Zap, x, y, spec, eps: float, budget: Budget, thresholds=THRESHOLDS,
                     batch_size: int = 500, device: str = "cpu") -> tuple[float | None, list[dict]]:  # fmt: skip
    """``pick`` on ``threshold_grid``: the chosen threshold and every threshold's record."""
    rows = threshold_grid(zap, x, y, spec, budget, thresholds, batch_size, device)
    return pick(rows, eps), [{**r, "within": r["charge"] <= eps + TOLERANCE} for r in rows]
