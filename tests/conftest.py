import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def sparse_relu_map(shape, zero_fraction=0.6, seed=0, device="cpu"):
    """A post-ReLU-like map: non-negative, with spatially clustered zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    blobs = torch.rand(shape, generator=g)
    blobs = torch.nn.functional.avg_pool2d(blobs, 3, 1, 1) if len(shape) == 4 and min(shape[2:]) >= 1 else blobs
    x = torch.where(blobs < torch.quantile(blobs.flatten(), zero_fraction), 0.0, x)
    return x.to(device)


@pytest.fixture
def relu_map():
    return sparse_relu_map


devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
