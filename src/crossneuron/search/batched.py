"""The ``batched`` engine (issue 18, item 2): many candidates per launch, the same records as ``naive``.

The fast engine's cuts (``fast.py``) make one candidate cheap; on a GPU it is still one kernel launch
per layer per candidate, so a GPU waits on launches. Most candidates a search evaluates change one
site only (the first level, the patch and channel quantizers, the screen's check sample), so they share
everything up to that site. ``evaluate_many`` takes a list of candidates and, for those whose only
predicting site ``k`` has a cached cut:

1. applies each candidate's mask at ``k`` to the cached base maps of every image (a cheap elementwise
   pass per candidate, which also counts its MACs saved and mispredictions);
2. keeps, per candidate, the images whose map it changed (only those can change their outcome);
3. runs the rest of the graph once over the union of those images, all candidates stacked along the
   batch (``rows_per_launch`` rows per call), and scatters each row's hit back to its candidate.

Candidates predicting at several sites, or at a cut the cache could not hold, go through
``evaluate`` one by one (the fast engine's). Nothing is cut short in a batch, so a batched record is
naive's record exactly (the tests check it record for record); a single ``evaluate`` may be cut short
like the fast engine's.
"""

from __future__ import annotations

import time

import torch

from ..precision import full_fp32
from .engine import lost_images
from .fast import FastEngine
from .records import EvalResult


class BatchedEngine(FastEngine):
    name = "batched"

    def __init__(self, net, images, labels, batch_size: int = 500, rows_per_launch: int = 4096, **kw):
        super().__init__(net, images, labels, batch_size, **kw)
        self.rows_per_launch = rows_per_launch

    def _single_site(self, masks: dict[int, torch.Tensor]) -> int | None:
        """The one site whose mask predicts and whose cut is cached, or None."""
        predicting = [k for k, m in masks.items() if m is not None and not bool(m.all())]
        return predicting[0] if len(predicting) == 1 and predicting[0] in self.tails else None

    @full_fp32()
    @torch.inference_mode()
    def evaluate_many(self, candidates: list[dict[int, torch.Tensor]],
                      min_correct: int | None = None) -> list[EvalResult]:  # fmt: skip
        """One record per candidate, in order (``min_correct`` is accepted and ignored: never cut)."""
        t0 = time.perf_counter()
        out: list[EvalResult | None] = [None] * len(candidates)
        groups: dict[int, list[int]] = {}
        for i, masks in enumerate(candidates):
            k = self._single_site(masks)
            if k is None:
                out[i] = self.evaluate(masks)
            else:
                groups.setdefault(k, []).append(i)
        for k, members in groups.items():
            self._site_batch(k, [(i, candidates[i][k]) for i in members], out)
        seconds = (time.perf_counter() - t0) / max(1, len(candidates))
        return [EvalResult(r.correct, r.images, r.macs_saved, r.mispredicted, seconds, r.cut_short, r.estimated, r.lost)
                for r in out]  # fmt: skip

    def _site_batch(self, k: int, members: list[tuple[int, torch.Tensor]], out: list) -> None:
        """Every member predicts at site ``k`` only: masks applied one by one, tails run together, in
        launches of about ``rows_per_launch`` changed images (the changed maps held meanwhile)."""
        node = self.spatial_node[k]
        layer = self.net.spatial(k)
        before = self.cache[node]
        for s in self.net.sites:  # only site k predicts in this group
            if s.index != k:
                self.net.set_mask(s.index, None)
        pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (member, image rows, changed maps)
        held = 0
        for i, mask in members:
            self.net.set_mask(k, mask)
            self.net.reset_stats()
            after = layer(before.clone())
            s = self.net.stats()
            rows = (after != before).flatten(1).any(1).nonzero().flatten()
            out[i] = EvalResult(self.base.correct, self.images, s.macs_saved, s.mispredicted, 0.0, lost=0)
            pending.append((i, rows, after[rows]))
            held += len(rows)
            if held >= self.rows_per_launch:
                self._run_tails(k, pending, out)
                pending, held = [], 0
        self._run_tails(k, pending, out)

    def _run_tails(self, k: int, pending: list[tuple[int, torch.Tensor, torch.Tensor]], out: list) -> None:
        """The rest of the graph over every pending member's changed images, stacked; each member's
        record gets its correct and lost counts from its own rows."""
        if not pending:
            return
        tail, live = self.tails[k]
        node = self.spatial_node[k]
        owner = torch.cat([torch.full((len(rows),), j, dtype=torch.long) for j, (_, rows, _) in enumerate(pending)])
        rows = torch.cat([rows for _, rows, _ in pending])
        maps = torch.cat([m for _, _, m in pending])
        right = torch.empty(len(rows), dtype=torch.bool)
        for start in range(0, len(rows), self.rows_per_launch):
            sl = slice(start, start + self.rows_per_launch)
            r = rows[sl]
            inputs = [maps[sl] if name == node else self.cache[name][r] for name in live]
            right[sl] = (tail(*inputs).argmax(1) == self.labels[r]).cpu()
        for j, (i, mine, _) in enumerate(pending):
            h = self.base_hits.clone()
            h[mine] = right[owner == j].to(h.device)
            r = out[i]
            out[i] = EvalResult(int(h.sum()), self.images, r.macs_saved, r.mispredicted, 0.0,
                                lost=lost_images(self.base_hits, h))  # fmt: skip
