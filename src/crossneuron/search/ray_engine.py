"""The Ray backend (issue 18): one evaluation split over Ray actors by disjoint shards of the
calibration images.

Correct counts, lost images, MACs saved and mispredictions add up over disjoint sets of images, so
the sum of the shards' records is the record one process makes over all of them. Each actor holds the
net (shipped once through Ray's object store), its shard of the images and a local engine (``naive``,
``fast`` or ``batched``) on it. Shards never cut a candidate short, so every record equals the naive
engine's. With ``batched`` a stage's independent candidates go to every shard in one call (one round
trip per stage step instead of one per candidate).
The driver keeps the one SQLite store and commits each record as it returns, as with a local engine:
a killed driver resumes as today, and an actor that dies is restarted by Ray (which rebuilds it from
the same object-store arguments) and its task retried.

Because one evaluation is split by images, the sequential stages (layer-quantizer steps, refine
moves, milp verifications) scale as well as the independent first-level ones.
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
    at ``address`` (``auto``, ``HOST:PORT``) or, with None, on a local one this process starts."""

    workers: int = 2
    address: str | None = None
    threads: int = 1

    def check(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise CrossneuronError(f"--workers must be a number of Ray workers >= 1, got {self.workers!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise CrossneuronError(f"threads per Ray worker must be >= 1, got {self.threads!r}")


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
        return self.engine.evaluate_many(candidates)


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
        shards = [s for s in torch.arange(self.images).tensor_split(backend.workers) if len(s)]
        # every constructor argument stays referenced here: Ray rebuilds a restarted actor from them
        self._refs = [ray.put(cpu_net)] + [ray.put(t[s].cpu()) for s in shards for t in (images, labels)]
        self.actors = [actor.remote(self._refs[0], self._refs[1 + 2 * i], self._refs[2 + 2 * i], batch_size, inner,
                                    backend.threads) for i in range(len(shards))]  # fmt: skip
        t0 = time.perf_counter()
        self.base = _sum(ray.get([a.base.remote() for a in self.actors]), time.perf_counter() - t0)
        self.calls, self.overhead = 0, 0.0  # evaluations, and their wall time beyond the slowest shard's own
        if inner == "batched":  # a stage's candidates go to every shard in one call (one round trip, not one each)
            self.evaluate_many = self._evaluate_many


    def evaluate(self, masks: dict[int, torch.Tensor], min_correct: int | None = None) -> EvalResult:
        """Every shard evaluates ``masks`` in full (``min_correct`` is not used: nothing is cut short)."""
        t0 = time.perf_counter()
        ray = _ray()
        masks = {k: (None if m is None else m.cpu()) for k, m in masks.items()}
        parts = ray.get([a.evaluate.remote(masks) for a in self.actors])
        wall = time.perf_counter() - t0
        self.calls += 1
        self.overhead += max(0.0, wall - max(p.seconds for p in parts))
        return _sum(parts, wall)

    def _evaluate_many(self, candidates: list[dict[int, torch.Tensor]],
                       min_correct: int | None = None) -> list[EvalResult]:  # fmt: skip
        """Every shard evaluates every candidate (its own ``evaluate_many``); records summed per candidate."""
        t0 = time.perf_counter()
        ray = _ray()
        candidates = [{k: (None if m is None else m.cpu()) for k, m in c.items()} for c in candidates]
        per_shard = ray.get([a.evaluate_many.remote(candidates) for a in self.actors])
        wall = time.perf_counter() - t0
        self.calls += len(candidates)
        self.overhead += max(0.0, wall - max(sum(r.seconds for r in rows) for rows in per_shard))
        return [_sum(list(parts), wall / max(1, len(candidates))) for parts in zip(*per_shard, strict=True)]

    def close(self) -> None:
        """End the workers (their CPUs go back to the cluster); the engine cannot evaluate afterwards."""
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self._refs = [], []
