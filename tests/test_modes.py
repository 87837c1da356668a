"""The mode registry drives targets, the quantizer chain, the dry run, the CLI's help and these tests."""

import sqlite3

import pytest
from typer.testing import CliRunner

import crossneuron as cn
from crossneuron.cli import app
from crossneuron.errors import CrossneuronError
from crossneuron.search.modes import MODES, Mode, get_mode, parse_modes
from crossneuron.search.plan import block_grid, block_side

from conftest import OPTIONS


def _counts(net, gt):
    """Channels and blocks per site by hand from the sites' shapes (SPEC 6's block side)."""
    channels, blocks = {}, {}
    for s in net.sites:
        c, h, w = s.shape
        side = block_side(h, w, 2, gt)
        channels[s.index] = c
        blocks[s.index] = len(block_grid((c, -(-h // 2) * 2, -(-w // 2) * 2), side))
    return channels, blocks


@pytest.mark.parametrize("name", list(MODES))
def test_first_level_targets_are_every_region_of_the_mode_once(name, full_run):
    """The registry's targets, against a brute force over (site, channel or all, block or all), and the
    first-level records of a search with that mode: one per target and pattern, none missing."""
    ctx, out, _ = full_run
    mode = MODES[name]
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    channels, blocks = _counts(net, OPTIONS["gt"])
    brute = [(s, c, b) for s in channels for c in [None, *range(channels[s])] for b in [None, *range(blocks[s])]
             if (c is not None) == mode.by_channel and (b is not None) == mode.by_block]  # fmt: skip
    assert mode.targets(channels, blocks) == sorted(brute, key=lambda t: tuple(-1 if v is None else v for v in t))
    rows = (
        sqlite3.connect(out / "records.sqlite")
        .execute("SELECT site, channel, block, pattern FROM evals WHERE mode = ? AND stage = 'first'", (name,))
        .fetchall()
    )
    assert sorted(rows, key=str) == sorted([(*t, 1 << k) for t in brute for k in range(4)], key=str)


@pytest.mark.parametrize("name", list(MODES))
def test_each_quantizer_of_the_chain_leaves_site_level_options(name, full_run):
    """The records' quantizer stages are the mode's chain, in order, each unit one level coarser."""
    _, out, _ = full_run
    mode = MODES[name]
    db = sqlite3.connect(out / "records.sqlite")
    stages = [r[0] for r in db.execute("SELECT stage FROM evals WHERE mode = ? AND stage IN ('patch', 'channel') "
                                        "GROUP BY stage ORDER BY MIN(id)", (name,))]  # fmt: skip
    assert stages == list(mode.chain)
    last = db.execute("SELECT DISTINCT channel, block FROM evals WHERE mode = ? AND stage = ?",
                      (name, mode.chain[-1])).fetchall() if mode.chain else [(None, None)]  # fmt: skip
    assert last == [(None, None)]  # the last quantizer's units are whole sites


@pytest.mark.parametrize("name", list(MODES))
def test_dry_run_counts_what_the_search_evaluates(name, full_run):
    """The dry run's first-level count equals the records a search made; every other stage's count
    bounds the records of that stage."""
    from crossneuron.estimate import dry_run

    ctx, out, _ = full_run
    options = _options([name])
    plan = dry_run(ctx, options, timed=1)["modes"][name]
    db = sqlite3.connect(out / "records.sqlite")
    made = dict(db.execute("SELECT stage, COUNT(*) FROM evals WHERE mode = ? GROUP BY stage", (name,)).fetchall())
    assert plan["evaluations"]["first"] == made["first"]
    for stage in (*MODES[name].chain, "layer"):
        assert made[stage] <= plan["evaluations"][stage]
    assert plan["seconds"] > 0


def _options(modes):
    from crossneuron.search.options import SearchOptions

    return SearchOptions(modes=modes, **OPTIONS)


def test_cli_help_lists_every_mode_and_all():
    result = CliRunner().invoke(app, ["optimize", "--help"], terminal_width=400)
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for name in MODES:
        assert name in text
    assert parse_modes("all") == list(MODES)


def test_unknown_modes_and_inconsistent_chains_are_refused():
    with pytest.raises(CrossneuronError, match="unknown mode 'uniform-everything'"):
        get_mode("uniform-everything")
    with pytest.raises(CrossneuronError, match="unknown mode ''"):
        parse_modes("uniform-layer,")
    with pytest.raises(ValueError, match="does not merge"):
        Mode("bad", True, True, ("channel",), "a chain that leaves blocks unmerged")
    with pytest.raises(ValueError, match="does not merge"):
        Mode("bad", True, True, ("channel", "patch"), "channels merged before blocks")


def test_a_mode_added_to_the_registry_alone_runs_through_every_stage(full_run, tmp_path, monkeypatch):
    """A new entry (the same targets as uniform-filters under another name) is searched with no other change,
    and makes exactly uniform-filters' records: the registry, not code per mode, drives the search."""
    from crossneuron.context import open_checkpoint
    from crossneuron.runfolder import optimize

    _, reference, _ = full_run
    monkeypatch.setitem(MODES, "blocks", Mode("blocks", False, True, ("patch",), "test mode"))
    optimize(open_checkpoint(full_run[0].path), _options(["blocks"]), tmp_path / "run")

    def rows(folder, mode):
        db = sqlite3.connect(folder / "records.sqlite")
        query = (
            "SELECT stage, site, channel, block, pattern, candidate, config, correct, macs_saved, mispredicted "
            "FROM evals WHERE mode = ? ORDER BY id"
        )
        return db.execute(query, (mode,)).fetchall()

    assert rows(tmp_path / "run", "blocks") == rows(reference, "uniform-filters")


def test_dry_run_cli_prints_every_stage_of_a_screened_refined_search(ckpt, cli):
    code, out, err = cli("optimize", "--checkpoint", ckpt, "--out", ckpt.parent / "dry", "--mode", "all", "--screen",
                         "--refine", "--calib", "100", "--gt", "4", "--ones", "1-1", "--dry-run")  # fmt: skip
    assert code == 0, err
    for stage in ("first", "first: exact near eps", "screen check", "patch", "channel", "layer", "refine",
                  "seeded refine", "test measurements"):  # fmt: skip
        assert f"{stage} " in out, stage
    assert "estimated total" in out and not (ckpt.parent / "dry").exists()
