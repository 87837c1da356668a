"""The search modes of SPEC 6 as data: one registry drives the search, the dry run, the CLI's help
and the parametrised tests. Adding a mode touches only ``MODES``.

A mode says what a first-level target is (a whole site, or one channel and/or one block of it)
and which quantizers, in order, merge its targets into site-level options: ``patch`` merges the
blocks of a unit, ``channel`` merges its channels. The layer quantizer (and refine) then works on
those site-level options, the same for every mode.

A target or unit is a key ``(site, channel, block)`` with ``None`` for "all": first-level targets
have the mode's dimensions set; each quantizer sets one of them back to ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CrossneuronError

Key = tuple[int, int | None, int | None]  # (site, channel or None, block or None)

QUANTIZERS = {"patch": "block", "channel": "channel"}  # quantizer stage -> the dimension it merges


@dataclass(frozen=True)
class Mode:
    name: str
    by_channel: bool  # a first-level target is one channel (else every channel)
    by_block: bool  # a first-level target is one block (else the whole map)
    chain: tuple[str, ...]  # quantizers below the layer quantizer, in order (keys of QUANTIZERS)
    help: str

    def __post_init__(self) -> None:  # the chain must merge exactly the dimensions the targets have
        merged = [QUANTIZERS[q] for q in self.chain]
        wanted = [d for d, on in (("block", self.by_block), ("channel", self.by_channel)) if on]
        if merged != wanted:
            raise ValueError(f"mode {self.name}: chain {self.chain} does not merge {wanted} (blocks first)")

    @property
    def below_site(self) -> bool:
        """Whether first-level targets are smaller than a site (the screen may estimate them)."""
        return self.by_channel or self.by_block

    def targets(self, channels: dict[int, int], blocks: dict[int, int]) -> list[Key]:
        """First-level targets in evaluation order (site, then channel, then block), from each site's
        channel count and block count."""
        return [
            (s, c, b)
            for s in channels
            for c in (range(channels[s]) if self.by_channel else [None])
            for b in (range(blocks[s]) if self.by_block else [None])
        ]

    def stage_units(self, channels: dict[int, int], blocks: dict[int, int]) -> list[tuple[str, int]]:
        """(quantizer, number of units it evaluates candidates for), in chain order (for the dry run)."""
        out = []
        by_channel, by_block = self.by_channel, self.by_block
        for q in self.chain:
            by_block = by_block and QUANTIZERS[q] != "block"
            by_channel = by_channel and QUANTIZERS[q] != "channel"
            out.append((q, sum((channels[s] if by_channel else 1) * (blocks[s] if by_block else 1) for s in channels)))
        return out


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("uniform-layer", False, False, (), "one pattern tiled over a whole site"),
        Mode("uniform-patch", True, False, ("channel",), "one pattern per channel of a site"),
        Mode("uniform-filters", False, True, ("patch",), "one pattern per block, the same in every channel"),
        Mode("max-granularity", True, True, ("patch", "channel"), "one pattern per block of each channel"),
    )
}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise CrossneuronError(f"unknown mode '{name}': choose from {', '.join(MODES)} or all")
    return MODES[name]


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """``all``, a comma list, or a list of names; each checked against the registry."""
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    if names == ["all"]:
        return list(MODES)
    if not names or not all(names):
        raise CrossneuronError(f"unknown mode '': choose from {', '.join(MODES)} or all")
    for name in names:
        get_mode(name)
    return names


def modes_help() -> str:
    return "; ".join(f"{m.name} ({m.help})" for m in MODES.values()) + "; a comma list, or all"
