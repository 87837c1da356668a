"""MAC accounting of SPEC 2 for the whole network, and the one percentage helper.

``network_macs`` counts every convolution, linear layer and matrix product of one forward pass for
one image, module or functional (``F.conv2d``, ``F.linear``, ``torch.matmul`` ...), as
``torch.utils.flop_counter`` FLOPs / 2. Site MACs (``Site.macs``) keep their own accounting in
``sites.py``: only the convolutions that feed a site count there.
"""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode


def counting() -> FlopCounterMode:
    """A context that counts the FLOPs of what runs inside it (``macs_of`` reads them)."""
    return FlopCounterMode(display=False)


def macs_of(counter: FlopCounterMode, images: int = 1) -> int:
    """MACs per image counted by ``counter`` over one forward pass of ``images`` images."""
    return counter.get_total_flops() // (2 * images)


def pct(macs: float, images: int, per_image: float) -> float:
    """``macs`` summed over ``images`` as a percentage of ``per_image`` MACs per image (0 for 0)."""
    whole = images * per_image
    return 100.0 * macs / whole if whole else 0.0
