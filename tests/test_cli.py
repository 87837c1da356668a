import json
import subprocess
import sys

from typer.testing import CliRunner

from crossneuron.cli import app


def test_sites_json_reports_the_cifar_resnet18_totals():
    result = CliRunner().invoke(app, ["sites", "--model", "resnet18", "--input-shape", "3,32,32", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["network_macs"] == 555_422_720 and data["site_macs"] == 555_417_600
    assert len(data["sites"]) == 17
    assert sum(r["macs"] for r in data["sites"]) == data["site_macs"]
    assert abs(sum(r["share_of_network_pct"] for r in data["sites"]) - data["site_share_of_network_pct"]) < 1e-9


def test_sites_table_names_every_site():
    result = CliRunner().invoke(app, ["sites", "--model", "alexnet", "--input-shape", "3,32,32"])
    assert result.exit_code == 0
    assert "features.1" in result.output and "features.11" in result.output and "5 sites" in result.output


def _cli(*args):
    code = "from crossneuron.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_bad_input_is_one_line_and_nonzero_exit(cli):
    proc = _cli("sites", "--model", "resnet19")  # the real entry point, once
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "unknown model 'resnet19'" in lines[0], proc.stderr
    for args, needle in [
        (["sites", "--input-shape", "3,32"], "--input-shape must be C,H,W"),
        (["sites", "--patch-size", "7"], "patch size must be from 2 to 5"),
        (["sites", "--model", "alexnet", "--input-shape", "3,4,4"], "does not run on input_shape"),  # no fx trace
    ]:
        code, _, err = cli(*args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_unknown_option_is_a_usage_error_not_a_traceback(cli):
    code, _, err = cli("sites", "--no-such-option", "1")
    assert code == 2, err
    assert "No such option: --no-such-option" in err and "Traceback" not in err


def test_optimize_flags_default_to_the_search_options_defaults():
    """The CLI repeats SearchOptions' defaults (it imports the search lazily): they must agree."""
    import dataclasses
    import inspect

    from crossneuron.cli import optimize
    from crossneuron.search.options import SearchOptions

    defaults = SearchOptions()
    flags = inspect.signature(optimize).parameters
    same = [f.name for f in dataclasses.fields(SearchOptions) if f.name in flags]
    assert {"budget", "optimizer", "milp_rounds", "milp_seconds", "batch_size", "seed"} <= set(same)
    for name in same:
        flag = flags[name].default
        ours = getattr(defaults, name)
        if name in ("eps", "ones", "modes", "refine_order", "couple"):
            continue  # given as text and parsed
        assert flag == ours, name
