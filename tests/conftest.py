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


# -- one tiny checkpoint and its searches, shared by every module that needs them -----------------
# (training or searching once per module made the suite slower for nothing; tests that change a run
# folder copy it first)
TINY = dict(model="resnet-tiny", dataset="synthetic", width=0.25, epochs=4, batch_size=64, lr=0.05)
# SPEC 6's own search (the layer quantizer under the net rule), which most tests check; since 0.6 the
# defaults are milp and flips, which tests ask for by name
OPTIONS = dict(patch_size=2, ones=(1, 1), gt=4, eps=[0.0, 1.0, 5.0], calib=100, batch_size=100, optimizer="layer",
               budget="net")  # fmt: skip


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    from crossneuron.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    train(TrainConfig(**TINY), out, quiet=True)
    return out


@pytest.fixture(scope="session")
def full_run(ckpt, tmp_path_factory):
    """Every mode, exact, naive engine (the reference the other engines and options are checked against)."""
    from crossneuron.context import open_checkpoint
    from crossneuron.runfolder import optimize
    from crossneuron.search.modes import MODES
    from crossneuron.search.options import SearchOptions

    out = tmp_path_factory.mktemp("search") / "run"
    ctx = open_checkpoint(ckpt)
    summary = optimize(ctx, SearchOptions(modes=list(MODES), **OPTIONS), out)
    return ctx, out, summary


@pytest.fixture(scope="session")
def screened_run(ckpt, tmp_path_factory):
    """Every mode, screened, fast engine (the report reads it too)."""
    from crossneuron.context import open_checkpoint
    from crossneuron.runfolder import optimize
    from crossneuron.search.modes import MODES
    from crossneuron.search.options import SearchOptions

    out = tmp_path_factory.mktemp("screened") / "run"
    options = SearchOptions(modes=list(MODES), screen=True, screen_band=0.5, screen_check=10, **OPTIONS)
    summary = optimize(open_checkpoint(ckpt), options, out, engine_name="fast")
    return options, out, summary


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``crossneuron ARGS`` in this process through the CLI's ``main`` (its error handling included):
    returns (exit status, stdout, stderr). Much faster than a subprocess (no new torch import); the suite
    keeps a few subprocess runs for the real entry point."""
    from crossneuron.cli import main

    def run(*args):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["crossneuron", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
