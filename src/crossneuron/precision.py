"""Measurements in full fp32: PyTorch lets cuDNN run fp32 convolutions in TF32 on Ampere and later
GPUs by default (a 10-bit mantissa), which makes a measured accuracy or zero count depend on the
card and on how images are batched. Every count crossneuron reports comes from inside ``full_fp32``;
training keeps the default. The previous setting is restored on exit, through the same API.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _conv_api():
    """torch >= 2.9's per-operator setting for cuDNN convolutions, or None (then the legacy flag)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv if conv is not None and hasattr(conv, "fp32_precision") else None


@contextmanager
def full_fp32():
    """Context manager and decorator: cuDNN convolutions in IEEE fp32 inside, as before outside."""
    conv = _conv_api()
    owner, name, exact = (conv, "fp32_precision", "ieee") if conv else (torch.backends.cudnn, "allow_tf32", False)
    old = getattr(owner, name)
    setattr(owner, name, exact)
    try:
        yield
    finally:
        setattr(owner, name, old)


def tf32_convolutions() -> bool:
    """Whether cuDNN may run fp32 convolutions in TF32 now."""
    conv = _conv_api()
    return conv.fp32_precision != "ieee" if conv else bool(torch.backends.cudnn.allow_tf32)
