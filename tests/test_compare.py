"""``crossneuron compare`` (issue 19, items 3 and 5): every scheme on one run's checkpoint, the combined
count against its parts, the report's section, resuming, bad input."""

import json
import shutil

import pytest

import crossneuron as cn
from crossneuron.context import open_checkpoint
from crossneuron.search.modes import MODES
from crossneuron.snapea import measure as snapea_measure
from crossneuron.splits import normalise

SMALL = ["--zap-epochs", "1", "--zap-images", "200", "--snapea-images", "4"]


@pytest.fixture(scope="module")
def compared(full_run, tmp_path_factory, cli_module):
    _, run, _ = full_run
    out = tmp_path_factory.mktemp("compare") / "run"
    shutil.copytree(run, out)
    code, text, err = cli_module("compare", out, *SMALL)
    assert code == 0, err
    return out, text, err


@pytest.fixture(scope="module")
def cli_module():
    """The ``cli`` fixture's runner for a module-scoped fixture (no capsys there: output through a pipe)."""
    import contextlib
    import io
    import sys

    from crossneuron.cli import main

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        argv = sys.argv
        sys.argv = ["crossneuron", *map(str, args)]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = argv
        return code, out.getvalue(), err.getvalue()

    return run


def test_every_scheme_has_a_row_with_its_test_drop_and_the_run_numbers(compared, full_run):
    out, text, _ = compared
    _, run, _ = full_run
    cmp = json.loads((out / "compare" / "compare.json").read_text())
    schemes = {r["scheme"] for r in cmp["rows"]}
    assert {"diagonal 2018", "ZAP", "ZAP per-site", "SnaPEA exact", "combined: diagonal + SnaPEA"} <= schemes
    assert {f"crossneuron {m}" for m in MODES} <= schemes
    baseline = json.loads((run / "baseline.json").read_text())["test"]
    diag = next(r for r in cmp["rows"] if r["scheme"] == "diagonal 2018")
    assert (diag["macs_saved_pct_network"], diag["test_drop"]) == (baseline["macs_saved_pct_network"], baseline["drop"])
    res = json.loads((run / "uniform-layer" / "eps-1" / "result.json").read_text())
    row = next(
        r for r in cmp["rows"] if r["scheme"] == "crossneuron uniform-layer" and r["setting"].startswith("eps 1 ")
    )
    assert (row["macs_saved_pct_network"], row["test_drop"]) == (res["macs_saved_pct_network"], res["test_drop"])
    assert cmp["oracle_pct_network"] == res["oracle_pct_network"]
    assert all(r["test_drop"] is not None for r in cmp["rows"] if r["macs_saved_pct_network"] is not None)
    for r in cmp["rows"]:  # a ZAP point that costs more than it saves is shown as not paying, with its numbers
        if r["scheme"].startswith("ZAP"):
            assert (r["macs_saved_pct_network"] or 0) > 0 or r["note"].startswith(("no ", "does not pay"))
    assert "| SnaPEA exact |" in text and "oracle" in text
    zap = json.loads((out / "compare" / "zap.json").read_text())
    for z in zap["eps"].values():  # ZAP's thresholds: within the run's budget on its calibration images
        ok = [g for g in zap["calib_grid"] if g["charge"] <= z["eps"] + 1e-9]
        assert z["threshold"] == (max(ok, key=lambda g: g["macs_saved_pct_network"])["threshold"] if ok else None)
    for z in zap["per_site"]["eps"].values():  # per-site thresholds: the equal-miss-rate grid, same rule
        ok = [g for g in zap["per_site"]["calib_grid"] if g["charge"] <= z["eps"] + 1e-9]
        assert z["rate"] == (max(ok, key=lambda g: g["macs_saved_pct_network"])["rate"] if ok else None)
    for z in [*zap["eps"].values(), *zap["per_site"]["eps"].values()]:
        if z.get("threshold", z.get("rate")) is not None:  # net of the predictors' MACs
            assert z["macs_saved_pct_network"] == pytest.approx(
                z["gross_saved_pct_network"] - z["overhead_pct_network"]
            )


def test_combined_is_spatial_plus_snapea_on_the_computed_positions(compared, ckpt):
    out, _, _ = compared
    snap = json.loads((out / "compare" / "snapea.json").read_text())
    for c in snap["combined"].values():
        assert c["total"] == pytest.approx(c["spatial"] + c["snapea"])
        assert c["total"] <= c["oracle"] + snap["alone"] + 1e-9
    # never above the sum of its parts, site by site: a mask on one site k leaves the sites before it as
    # they were and lets SnaPEA count only the positions the mask still computes there
    ctx = open_checkpoint(ckpt)
    x = normalise(ctx.data("test")[0][:4], ctx.spec)
    net = cn.attach(ctx.model, ctx.spec.input_shape, 2)
    alone = snapea_measure(net, x)
    k = 2
    net.set_mask(k, cn.diagonal(2))
    net.reset_stats()
    both = snapea_measure(net, x)
    saved = net.stats().per_site[k]
    for j in range(k):
        assert both.sites[j].macs_skipped == alone.sites[j].macs_skipped
    assert both.sites[k].macs_skipped <= alone.sites[k].macs_skipped
    assert both.sites[k].computed < alone.sites[k].computed
    assert saved.macs_saved + both.sites[k].macs_skipped <= alone.sites[k].macs_skipped + saved.macs_saved
    assert saved.macs_saved + both.sites[k].macs_skipped <= saved.site_macs * len(x)


def test_a_rerun_reuses_the_finished_parts_and_the_report_shows_them(compared, cli_module):
    out, text, _ = compared
    zap = (out / "compare" / "zap.json").stat().st_mtime_ns
    code, again, err = cli_module("compare", out, *SMALL)
    assert code == 0, err
    assert again == text and (out / "compare" / "zap.json").stat().st_mtime_ns == zap
    # the report's section and figure (the whole report is built by test_report on the same kind of run)
    from crossneuron.report import _html, figures, load_run

    run = load_run(out)
    page = _html(run, [])
    assert "The field side by side" in page and "SnaPEA exact" in page and "ZAP" in page
    fig = figures.peers(run)
    assert fig is not None and fig.axes[0].get_xlabel().startswith("test accuracy drop")


def test_bad_compare_input_is_one_line(cli, tmp_path, compared):
    out, _, _ = compared
    code, _, err = cli("compare", tmp_path / "nothing")
    assert code != 0 and "is not a folder" in err and "\n" not in err.strip()
    code, _, err = cli("compare", out, "--zap-epochs", "0")
    assert code != 0 and "--zap-epochs must be an integer >= 1" in err
    (out / "compare" / "zap.safetensors").write_bytes(b"broken")
    (out / "compare" / "zap.json").unlink()
    code, _, err = cli("compare", out, *SMALL)
    assert code != 0 and "cannot read ZAP predictors" in err and "\n" not in err.strip()
