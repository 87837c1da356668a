"""The Ray backend (issue 18): evaluations spread over Ray actors two ways, both exact.

Across images: one evaluation is split over a group of actors by disjoint shards of the calibration
images.
Correct counts, lost images, MACs saved and mispredictions add up over disjoint sets of images, so
the sum of the shards' records is the record one process makes over all of them. Each actor holds the
net (shipped once through Ray's object store), its shard of the images and a local engine (``naive``,
``fast`` or ``batched``) on it. Shards never cut a candidate short, so every record equals the naive
engine's. With ``batched`` a stage's independent candidates go to every shard in one call (one round
trip per stage step instead of one per candidate).
The driver keeps the one SQLite store and commits each record as it returns, as with a local engine:
a killed driver resumes as today, and an actor that dies is restarted by Ray (which rebuilds it from
the same object-store arguments) and its task retried.

Across candidates: the workers form ``groups`` equal groups, each holding every shard once; a batch
of independent candidates (first-level targets, a quantizer unit's candidates) is spread over the
groups, each group evaluating its part by image shards. Sequential evaluations (layer-quantizer steps,
refine moves, milp verifications) go to the groups in turn, so with one group every worker serves
each of them (the sequential stages scale by images), and with many groups the independent stages
scale past the point where image shards become too small to pay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import CrossneuronError
from ..net import PredictiveNet
from .records import EvalResult


@dataclass(frozen=True)
class RayBackend:
    """Where evaluations run: ``workers`` actors of ``threads`` torch threads each, on the Ray cluster
    at ``address`` (``auto``, ``HOST:PORT``) or, with None, on a local one this process starts;
    ``groups`` equal groups of them take independent candidates side by side (1: every worker on every
    evaluation, split by images)."""

    workers: int = 2
    address: str | None = None
    threads: int = 1
    groups: int = 1

    def check(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise CrossneuronError(f"--workers must be a number of Ray workers >= 1, got {self.workers!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise CrossneuronError(f"threads per Ray worker must be >= 1, got {self.threads!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1 \
                or self.workers % self.groups:  # fmt: skip
            raise CrossneuronError(f"--groups must divide the {self.workers} Ray workers into equal groups "
                                   f"(a divisor of --workers), got {self.groups!r}")  # fmt: skip


def _ray():
    try:
        import ray
    except ImportError:
        raise CrossneuronError("--backend ray needs Ray: pip install 'crossneuron[ray]'") from None
    return ray


class _Shard:
    """One actor: a local engine on one shard of the calibration images."""

    def __init__(self, net: PredictiveNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int, inner: str,
                 threads: int):  # fmt: skip
        from .batched import BatchedEngine
        from .engine import NaiveEngine
        from .fast import FastEngine

        torch.set_num_threads(threads)
        engines = {"naive": NaiveEngine, "fast": FastEngine, "batched": BatchedEngine}
        self.engine = engines[inner](net, images, labels, batch_size)

    def base(self) -> EvalResult:
        return self.engine.base

    def evaluate(self, masks: dict[int, torch.Tensor]) -> EvalResult:
        return self.engine.evaluate(masks)

    def evaluate_many(self, candidates: list[dict[int, torch.Tensor]]) -> list[EvalResult]:
        many = getattr(self.engine, "evaluate_many", None)  # batched; the others one by one, here
        return many(candidates) if many is not None else [self.engine.evaluate(c) for c in candidates]


def spread(n: int, groups: int) -> list[range]:
    """Candidates 0..n-1 in ``groups`` contiguous parts whose sizes differ by at most one, in order."""
    size, extra = divmod(n, groups)
    starts = [g * size + min(g, extra) for g in range(groups + 1)]
    return [range(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def _sum(parts: list[EvalResult], seconds: float) -> EvalResult:
    return EvalResult(
        correct=sum(p.correct for p in parts),
        images=sum(p.images for p in parts),
        macs_saved=sum(p.macs_saved for p in parts),
        mispredicted=sum(p.mispredicted for p in parts),
        seconds=seconds,
        lost=sum(p.lost or 0 for p in parts),
    )


class RayEngine:
    """The Engine protocol (``engine.Engine``) over Ray actors, each a local ``inner`` engine on a shard."""

    def __init__(self, net: PredictiveNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500,
                 backend: RayBackend = RayBackend(), inner: str = "fast"):  # fmt: skip
        backend.check()
        if inner not in ("naive", "fast", "batched"):
            raise CrossneuronError(f"unknown engine '{inner}' for the Ray backend: choose naive, fast, batched")
        ray = _ray()
        if not ray.is_initialized():
            try:
                cpus = None if backend.address else backend.workers * backend.threads
                ray.init(address=backend.address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a cluster that cannot be reached is one line
                where = backend.address or "a local cluster"
                raise CrossneuronError(f"Ray could not start or reach {where}: {' '.join(str(exc).split())[:200]}"
                                       ) from None  # fmt: skip
        self.name = f"ray-{inner}"
        self.images = len(labels)
        self.batches = [(images[i : i + batch_size], labels[i : i + batch_size])
                        for i in range(0, len(labels), batch_size)]  # fmt: skip
        cpu_net = net if next(net.parameters()).device.type == "cpu" else None
        if cpu_net is None:
            raise CrossneuronError("the Ray backend evaluates on CPU workers: open the checkpoint with --device cpu")
        actor = ray.remote(num_cpus=backend.threads, max_restarts=3, max_task_retries=3)(_Shard)
        shards = [s for s in torch.arange(self.images).tensor_split(backend.workers // backend.groups) if len(s)]
        # every constructor argument stays referenced here: Ray rebuilds a restarted actor from them
        self._refs = [ray.put(cpu_net)] + [ray.put(t[s].cpu()) for s in shards for t in (images, labels)]
        self.groups = [[actor.remote(self._refs[0], self._refs[1 + 2 * i], self._refs[2 + 2 * i], batch_size, inner,
                                     backend.threads) for i in range(len(shards))]
                       for _ in range(backend.groups)]  # fmt: skip
        self.actors = [a for group in self.groups for a in group]
        self.parallel = len(self.groups)  # independent candidates worth handing over at once
        self._turn = 0
        t0 = time.perf_counter()
        self.base = _sum(ray.get([a.base.remote() for a in self.groups[0]]), time.perf_counter() - t0)
        self.calls, self.overhead = 0, 0.0  # evaluations, and their wall time beyond the slowest shard's own
        if inner == "batched" or self.parallel > 1:  # candidates in one call per actor (one round trip each)
            self.evaluate_many = self._evaluate_many

    def evaluate(self, masks: dict[int, torch.Tensor], min_correct: int | None = None) -> EvalResult:
        """The next group's shards evaluate ``masks`` in full (``min_correct`` is not used: nothing is cut
        short)."""
        t0 = time.perf_counter()
        ray = _ray()
        masks = {k: (None if m is None else m.cpu()) for k, m in masks.items()}
        group = self.groups[self._turn % len(self.groups)]
        self._turn += 1
        parts = ray.get([a.evaluate.remote(masks) for a in group])
        wall = time.perf_counter() - t0
        self.calls += 1
        self.overhead += max(0.0, wall - max(p.seconds for p in parts))
        return _sum(parts, wall)

    def _evaluate_many(self, candidates: list[dict[int, torch.Tensor]],
                       min_correct: int | None = None) -> list[EvalResult]:  # fmt: skip
        """The candidates in contiguous parts, one per group; each shard of a group evaluates its part
        (its own ``evaluate_many``) in one call; records summed per candidate over the group's shards."""
        t0 = time.perf_counter()
        ray = _ray()
        candidates = [{k: (None if m is None else m.cpu()) for k, m in c.items()} for c in candidates]
        parts = [p for p in spread(len(candidates), len(self.groups)) if len(p)]
        calls = []
        for group, part in zip(self.groups[: len(parts)], parts, strict=True):  # fewer parts: the last groups rest
            ref = ray.put([candidates[i] for i in part])
            calls.append([a.evaluate_many.remote(ref) for a in group])
        per_group = [ray.get(c) for c in calls]  # per group: per shard, the part's records
        wall = time.perf_counter() - t0
        self.calls += len(candidates)
        slowest = max((sum(r.seconds for r in rows) for shards in per_group for rows in shards), default=0.0)
        self.overhead += max(0.0, wall - slowest)
        share = wall / max(1, len(candidates))
        return [_sum(list(each), share) for shards in per_group for each in zip(*shards, strict=True)]

    def close(self) -> None:
        """End the workers (their CPUs go back to the cluster); the engine cannot evaluate afterwards."""
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._refs = [], []
