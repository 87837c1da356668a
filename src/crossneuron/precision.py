"""Measurements in full fp32: PyTorch lets cuDNN run fp32 convolutions in TF32 on Ampere and later
GPUs by default (a 10-bit mantissa), which makes a measured accuracy or zero count depend on the
card and on how images are batched. Every count crossneuron reports comes from inside ``full_fp32``;
training keeps the default. The previous setting is restored on exit, through the same API.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def full_fp32():
    """Context manager and decorator: cuDNN convolutions in IEEE fp32 inside, as before outside."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-operator API
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


def tf32_convolutions() -> bool:
    """Whether cuDNN may run fp32 convolutions in TF32 now."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision != "ieee"
    return bool(torch.backends.cudnn.allow_tf32)
