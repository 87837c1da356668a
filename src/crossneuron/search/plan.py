"""Compact masks: a site's plan is a tuple of pieces (channel or all, block or whole map, pattern code).

Pieces are applied in order to an all-true (C, Hp, Wp) mask; each tiles its pattern over its
region (the whole map or one block, one channel or all). This is the form results and records
store; ``plan_mask`` expands it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..patterns import code_to_pattern


@dataclass(frozen=True, order=True)
class Piece:
    channel: int | None  # None: every channel
    block: int | None  # None: the whole map; else a block index in row-major order
    code: int  # the pattern tiled over the region

    def as_json(self) -> list:
        return [self.channel, self.block, self.code]


SitePlan = tuple[Piece, ...]


def block_side(h: int, w: int, p: int, gt: float) -> int:
    """SPEC 6: the side starts at p and grows by p while H * W / side^2 > GT; GT = 0: single patches."""
    side = p
    if gt <= 0:
        return side
    while h * w / side**2 > gt:
        side += p
    return side


def block_grid(mask_shape: tuple[int, int, int], side: int) -> list[tuple[slice, slice]]:
    """Row-major blocks of ``side`` over the padded map (edge blocks may be partial)."""
    _, hp, wp = mask_shape
    return [
        (slice(r, min(r + side, hp)), slice(c, min(c + side, wp)))
        for r in range(0, hp, side)
        for c in range(0, wp, side)
    ]


def plan_mask(plan: SitePlan, mask_shape: tuple[int, int, int], p: int, side: int) -> torch.Tensor | None:
    """The (C, Hp, Wp) bool mask of a plan; None for the empty plan (no prediction)."""
    if not plan:
        return None
    c, hp, wp = mask_shape
    mask = torch.ones(mask_shape, dtype=torch.bool)
    blocks = block_grid(mask_shape, side) if any(pc.block is not None for pc in plan) else []
    tiles: dict[int, torch.Tensor] = {}
    for piece in plan:
        if piece.code not in tiles:
            tiles[piece.code] = code_to_pattern(piece.code, p).repeat(hp // p, wp // p)
        tile = tiles[piece.code]
        rows, cols = (slice(None), slice(None)) if piece.block is None else blocks[piece.block]
        chans = slice(None) if piece.channel is None else piece.channel
        mask[chans, rows, cols] = tile[rows, cols]
    return mask


def plan_json(plan: SitePlan) -> list:
    return [piece.as_json() for piece in plan]


def plan_from_json(data) -> SitePlan:
    return tuple(Piece(*item) for item in data)
