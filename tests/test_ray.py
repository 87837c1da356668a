"""The Ray backend (issue 18) on a local cluster the test starts (2 CPUs): records equal the local
naive engine's for every mode, through a killed worker (its task retried) and an interrupted driver
(resumed)."""

import sqlite3

import pytest

from crossneuron.context import open_checkpoint
from crossneuron.errors import CrossneuronError
from crossneuron.runfolder import optimize
from crossneuron.search.options import SearchOptions

from conftest import OPTIONS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _records(folder):
    with sqlite3.connect(folder / "records.sqlite") as db:
        return sorted(db.execute("SELECT key, config, correct, images, macs_saved, mispredicted, lost "
                                 "FROM evals").fetchall())  # fmt: skip


def test_modes_give_the_local_records_through_a_killed_worker_and_an_interrupted_driver(
    cluster, ckpt, tmp_path, monkeypatch
):
    """uniform-layer and max-granularity on 2 Ray workers (between them every stage a mode runs: first
    level at site and block level, the patch and channel quantizers, the layer quantizer): a worker
    killed after 40 evaluations (each evaluation split by images over both) is restarted and its
    evaluation retried; the driver stopped after 150 resumes with the workers in two groups that take a
    stage's candidates side by side, on the batched engine; the records equal the local naive engine's.
    (GT 1: one block per channel, so the evaluations stay few; the Ray engine is the same for every
    mode.)"""
    from crossneuron.search import ray_engine
    from crossneuron.search.ray_engine import RayBackend

    ctx = open_checkpoint(ckpt)
    options = SearchOptions(modes=["uniform-layer", "max-granularity"], **{**OPTIONS, "gt": 1, "eps": [1.0, 5.0]})
    local, out = tmp_path / "local", tmp_path / "ray"
    summary = optimize(ctx, options, local, "naive", check=0)
    evaluate, calls = ray_engine.RayEngine.evaluate, {"n": 0}

    def troubled(self, masks, min_correct=None):
        calls["n"] += 1
        if calls["n"] == 40:
            ray.kill(self.actors[0], no_restart=False)  # the process dies; Ray starts it again
        if calls["n"] == 150:
            raise KeyboardInterrupt  # the driver stops with 149 records committed
        return evaluate(self, masks, min_correct)

    monkeypatch.setattr(ray_engine.RayEngine, "evaluate", troubled)
    with pytest.raises(KeyboardInterrupt):
        optimize(ctx, options, out, "naive", check=0, backend=RayBackend(2))
    assert 100 < len(_records(out)) < len(_records(local))
    monkeypatch.setattr(ray_engine.RayEngine, "evaluate", evaluate)
    # resumed on two groups of one worker each, the batched engine on them: a stage's candidates are
    # spread over the groups, each evaluating its part in one call
    theirs = optimize(ctx, options, out, "batched", check=0, backend=RayBackend(2, groups=2))
    assert _records(out) == _records(local) and len(_records(out)) > 200
    eps = lambda s: {m: info["eps"] for m, info in s["modes"].items()}  # noqa: E731
    assert eps(theirs) == eps(summary)
    with sqlite3.connect(out / "records.sqlite") as db:
        engines = {row[0] for row in db.execute("SELECT DISTINCT engine FROM evals")}
    assert {"ray-naive", "ray-batched"} <= engines <= {"ray-naive", "ray-batched", "reused"}  # reused: met again


def test_bad_backend_values_are_one_line(cli, ckpt, tmp_path):
    from crossneuron.search.ray_engine import RayBackend

    with pytest.raises(CrossneuronError, match="--workers must be"):
        RayBackend(0).check()
    with pytest.raises(CrossneuronError, match="--groups must divide the 3 Ray workers"):
        RayBackend(3, groups=2).check()
    code, _, err = cli("optimize", "--checkpoint", ckpt, "--out", tmp_path / "x", "--backend", "spark")
    assert code != 0 and "unknown --backend 'spark': choose local or ray" in err
    code, _, err = cli("optimize", "--checkpoint", ckpt, "--out", tmp_path / "x", "--backend", "ray", "--workers", 0)
    assert code != 0 and "--workers must be a number of Ray workers >= 1" in err and "\n" not in err.strip()
