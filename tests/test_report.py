"""The report from a real (tiny) run: files, table, HTML; and headless Chromium opening it."""

import json
import os
import shutil
import subprocess

import pytest

from crossneuron.errors import CrossneuronError
from crossneuron.report import build_report
from crossneuron.search.modes import MODES


@pytest.fixture(scope="module")
def run_dir(screened_run, tmp_path_factory):
    """A copy of the shared screened run (the report writes into the run folder)."""
    copy = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(screened_run[1], copy)
    return copy


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    """One report of the run, built once: (what build_report returned, its folder)."""
    folder = tmp_path_factory.mktemp("built") / "rep"
    return build_report(run_dir, folder), folder


def test_report_writes_every_figure_table_and_page(run_dir, report):
    made, folder = report
    for name in ("savings_vs_drop", "savings_vs_eps", "modes_bars", "per_site", "masks_by_site", "masks_of_site",
                 *(f"trajectory_{m}" for m in MODES)):  # fmt: skip
        assert name in made["figures"]
        for ext in ("png", "svg"):
            assert (folder / f"{name}.{ext}").stat().st_size > 1000
    table = (folder / "table.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    layer3 = summary["modes"]["uniform-layer"]["eps"]["5"]
    row = next(line for line in table.splitlines() if line.startswith("| uniform-layer"))
    cell = f"{layer3['macs_saved_pct_network']:.2f} ({layer3['macs_saved_pct_sites']:.2f}) / {layer3['test_drop']:.2f}"
    assert cell in row  # every saving beside its test drop
    assert row.count(" - ") == 2  # eps 0.5 and 3 were not asked for
    b = summary["baseline"]["test"]
    assert f"{b['macs_saved_pct_network']:.2f} ({b['macs_saved_pct_sites']:.2f}) / {b['drop']:.2f}" in row
    drops = next(line for line in table.splitlines() if line.startswith("| uniform-layer | 5 |"))
    assert drops.split(" | ")[2:5] == [f"{layer3[k]:.2f}" for k in ("calib_drop", "check_drop", "test_drop")]
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(made["figures"])
    assert "src='http" not in page and 'src="http' not in page  # self-contained: nothing fetched
    assert summary["modes"]["uniform-patch"]["screen"]["sample"] == 10 and "Spearman" in page


def test_a_corrupt_masks_file_is_one_clear_error(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for path in copy.glob("*/eps-*/masks.safetensors"):
        path.write_bytes(b"garbage")
    with pytest.raises(CrossneuronError, match="masks.safetensors is corrupt .*re-run `crossneuron optimize`"):
        build_report(copy, tmp_path / "rep")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CrossneuronError, match="summary.json not found"):
        build_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(CrossneuronError, match="corrupt"):
        build_report(tmp_path)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (make test installs it when run as root)")
def test_report_opens_in_headless_chromium_with_every_image_and_no_errors(report, tmp_path):
    made = report[0]
    page = "file://" + os.path.abspath(made["html"])
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=5000", "--user-data-dir=" + str(tmp_path / "profile")]  # fmt: skip
    shot = tmp_path / "shot.png"
    proc = subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,3000", page],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shot.stat().st_size > 10_000, proc.stderr[-2000:]
    dom = subprocess.run(args + ["--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert f'data-images="{len(made["figures"])}"' in dom.stdout, dom.stderr[-2000:]
    assert 'data-images-ok="yes"' in dom.stdout and 'data-errors="0"' in dom.stdout
    console_errors = [line for line in (proc.stderr + dom.stderr).splitlines()
                      if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]  # fmt: skip
    assert not console_errors, console_errors


def test_sigkill_of_report_then_a_rerun_writes_the_same_files(run_dir, report, tmp_path, cli):
    """kill -9 while the report writes its files (once its first file exists), then the same command:
    the same set of files, table.md byte-equal to an uninterrupted report's, no temporary files left."""
    import signal
    import subprocess
    import sys
    import time

    reference, whole = report  # an uninterrupted report of the same run
    out = tmp_path / "killed"
    args = [sys.executable, "-c", "from crossneuron.cli import main; main()", "report", str(run_dir), "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(out.glob("*.png")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-way, not finished
    assert not (out / "report.html").exists()
    code, _, err = cli(*args[3:])  # the same command again, in this process (no second torch import)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    assert (out / "table.md").read_text() == reference["table"]
