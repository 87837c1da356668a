"""The exact ``fast`` engine: same correct counts, MACs saved and mispredictions as ``naive``.

Two savings, both exact:
- *Graph cuts.* One base pass (no prediction) caches, for every site k, the values live right after
  site k's Spatial layer (torch.fx). An evaluation whose first predicting site is k starts there.
- *Only changed images.* At each predicting site, in order, the images whose activations are still
  the base ones get the prediction applied to their cached map; only those where it zeroed a
  non-zero value (a misprediction) change, and only those run the rest of the graph. An image that
  never changes keeps its base prediction. Statistics still count every image at every site.
- *Cut short.* Images go in chunks, each through every predicting site; after each chunk, a
  candidate whose correct count can no longer reach ``min_correct`` (unseen images counted as
  right) stops and returns that bound with ``cut_short`` set.

The cache is bounded by ``max_cache_bytes``: cuts whose values do not fit (the earliest first) fall
back to a full forward pass, as ``naive`` does.
"""

from __future__ import annotations

import time

import torch
import torch.fx as fx

from ..net import PredictiveNet
from ..precision import full_fp32
from .engine import NaiveEngine, lost_images
from .records import EvalResult

SPATIAL_PREFIX = "crossneuron_spatial."


def _tail(gm: fx.GraphModule, cut: fx.Node, order: dict[fx.Node, int]) -> tuple[fx.GraphModule, list[str]]:
    """A GraphModule computing the graph after ``cut`` from the values live there (by node name)."""
    live = sorted(
        {n for n in gm.graph.nodes if order[n] <= order[cut] and any(order[u] > order[cut] for u in n.users)},
        key=order.__getitem__,
    )
    graph = fx.Graph()
    env = {n: graph.placeholder(n.name) for n in live}
    for n in gm.graph.nodes:
        if order[n] > order[cut]:
            env[n] = graph.node_copy(n, lambda a: env[a])
    return fx.GraphModule(gm, graph), [n.name for n in live]


class Capture(fx.Interpreter):
    """Runs a graph and keeps a copy of the named nodes' values (taken before any later in-place op)."""

    def __init__(self, gm, wanted: set[str]):
        super().__init__(gm)
        self.wanted, self.values = wanted, {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.wanted:
            self.values[n.name] = out.clone()
        return out


class FastEngine(NaiveEngine):
    name = "fast"

    def __init__(self, net: PredictiveNet, images, labels, batch_size: int = 500, max_cache_bytes: int = 4 << 30,
                 chunk: int = 100):  # fmt: skip
        super().__init__(net, images, labels, batch_size)  # naive base and fallback
        self.chunk = chunk  # images per step; after each, a candidate that cannot reach min_correct stops
        gm = net.graph_module
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        spatial_nodes = {int(n.target[len(SPATIAL_PREFIX):]): n for n in gm.graph.nodes
                         if n.op == "call_module" and str(n.target).startswith(SPATIAL_PREFIX)}  # fmt: skip
        self.tails: dict[int, tuple[fx.GraphModule, list[str]]] = {}
        self.spatial_node = {k: n.name for k, n in spatial_nodes.items()}
        cache_plan: dict[str, int] = {}
        budget = max_cache_bytes
        per_image = self._sizes(images[:1])
        for k in sorted(spatial_nodes, reverse=True):  # later cuts are cheaper to keep and gain less
            tail, live = _tail(gm, spatial_nodes[k], order)
            extra = sum(per_image[name] for name in live if name not in cache_plan) * len(labels)
            if extra > budget:
                break
            budget -= extra
            cache_plan.update({name: 1 for name in live})
            self.tails[k] = (tail, live)
        self.cache = self._capture(set(cache_plan))
        self.base_hits = self._base_hits()
        for s in net.sites:  # the search reads MACs saved and mispredictions, never the oracle
            net.spatial(s).count_zeros = False

    @full_fp32()
    @torch.inference_mode()
    def _sizes(self, x) -> dict[str, int]:
        cap = Capture(self.net.graph_module, {n.name for n in self.net.graph_module.graph.nodes})
        self._all_sites(False)
        cap.run(x)
        return {k: v.numel() * v.element_size() for k, v in cap.values.items() if isinstance(v, torch.Tensor)}

    def _all_sites(self, on: bool) -> None:
        for s in self.net.sites:
            self.net.enable(s, on)

    @full_fp32()
    @torch.inference_mode()
    def _capture(self, wanted: set[str]) -> dict[str, torch.Tensor]:
        self._all_sites(False)
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
        self.logits = []
        for x, _ in self.batches:
            cap = Capture(self.net.graph_module, wanted)
            self.logits.append(cap.run(x))
            for name in wanted:
                parts[name].append(cap.values[name])
        self._all_sites(True)
        return {name: torch.cat(v) for name, v in parts.items()}

    def _base_hits(self) -> torch.Tensor:
        self.labels = torch.cat([y for _, y in self.batches])
        hits = torch.cat(self.logits).argmax(1) == self.labels
        wrong = (~hits).long()
        # base_wrong_after[i]: base-wrong images at positions >= i
        self.base_wrong_after = torch.cat([wrong.flip(0).cumsum(0).flip(0), wrong.new_zeros(1)]).cpu()
        return hits

    @full_fp32()
    @torch.inference_mode()
    def evaluate(self, masks: dict[int, torch.Tensor], min_correct: int | None = None) -> EvalResult:
        t0 = time.perf_counter()
        net = self.set_masks(masks)
        predicting = [s.index for s in net.sites if net.spatial(s).predicting]
        if not predicting:
            return EvalResult(self.base.correct, self.images, 0, 0, time.perf_counter() - t0, lost=0)
        if predicting[0] not in self.tails:  # its cut is not cached: a full pass
            result = super().evaluate(masks)
            return EvalResult(result.correct, result.images, result.macs_saved, result.mispredicted,
                              time.perf_counter() - t0, lost=result.lost)  # fmt: skip
        net.reset_stats()
        hits = self.base_hits.clone()
        for start in range(0, self.images, self.chunk):  # all cached: later cuts are cached before earlier ones
            end = min(start + self.chunk, self.images)
            fresh = torch.arange(start, end, device=hits.device)  # images still holding base activations
            for k in predicting:
                if not len(fresh):
                    break  # every image of the chunk ran its tail through the remaining sites
                fresh = self._predict_at(k, fresh, hits)
            if min_correct is not None:
                # unseen images keep their base result or may turn right: an upper bound
                bound = int(hits.sum()) + int(self.base_wrong_after[end])
                if bound < min_correct and end < self.images:
                    stats = net.stats()
                    return EvalResult(bound, self.images, stats.macs_saved, stats.mispredicted,
                                      time.perf_counter() - t0, cut_short=True,
                                      lost=lost_images(self.base_hits, hits))  # fmt: skip
        stats = net.stats()
        return EvalResult(int(hits.sum()), self.images, stats.macs_saved, stats.mispredicted, time.perf_counter() - t0,
                          lost=lost_images(self.base_hits, hits))  # fmt: skip

    def _predict_at(self, k: int, rows: torch.Tensor, hits: torch.Tensor) -> torch.Tensor:
        """Apply site ``k``'s prediction to the cached maps of ``rows`` (base activations so far);
        the images it changes run the rest of the graph (later sites predicting) and get their final
        hit. Returns the rows it left unchanged."""
        tail, live = self.tails[k]
        node = self.spatial_node[k]
        before = self.cache[node][rows]
        after = self.net.spatial(k)(before.clone())
        changed = (after != before).flatten(1).any(1)
        if changed.any():
            moved = rows[changed]
            inputs = [after[changed] if name == node else self.cache[name][moved] for name in live]
            hits[moved] = tail(*inputs).argmax(1) == self.labels[moved]
        return rows[~changed]
