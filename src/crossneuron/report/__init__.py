"""``crossneuron report``: figures (PNG and SVG), a Markdown table and one self-contained HTML page
from a run folder written by ``optimize`` (and ``retrain``, where present)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib.pyplot as plt

from ..fsutil import atomic_write, output_folder
from . import figures
from .load import Run, load_run
from .tables import drops_rows, headline_rows, markdown

__all__ = ["build_report", "load_run"]


def _save(fig, folder: Path, name: str) -> dict:
    """PNG and SVG files; returns the figure's name and its PNG as base64 for the page."""
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=110)
        data = buf.getvalue()
        atomic_write(folder / f"{name}.{ext}", lambda tmp, data=data: Path(tmp).write_bytes(data))
        if ext == "png":
            png = base64.b64encode(data).decode()
    plt.close(fig)
    return {"name": name, "png": png}


def _figures(run: Run, folder: Path) -> list[tuple[str, dict]]:
    out = [("MACs saved against accuracy drop", _save(figures.savings_vs_drop(run), folder, "savings_vs_drop")),
           ("MACs saved against epsilon", _save(figures.savings_vs_eps(run), folder, "savings_vs_eps")),
           ("Modes at each epsilon", _save(figures.modes_bars(run), folder, "modes_bars"))]  # fmt: skip
    mode, eps, best = run.headline()
    masks = run.path / mode / f"eps-{eps:g}" / "masks.safetensors"
    fig = figures.per_site(best, f"Per site: {mode}, eps {eps:g}")
    if fig is not None:
        out.append(("Per-site breakdown", _save(fig, folder, "per_site")))
    if masks.exists():
        fig = figures.masks_by_site(masks, f"{mode}, eps {eps:g}", list(best.masks))
        out.append(("Mask view: every site", _save(fig, folder, "masks_by_site")))
        rows = best.per_site or []
        site = max(rows, key=lambda r: r["macs_saved_pct_network"])["name"] if rows else None
        if site:
            fig = figures.masks_of_site(masks, site, f"{mode}, eps {eps:g}")
            out.append((f"Mask view: all channels of {site}", _save(fig, folder, "masks_of_site")))
    for m in run.modes:
        fig = figures.trajectory(run, m)
        if fig is not None:
            out.append((f"Layer quantizer trajectory: {m}", _save(fig, folder, f"trajectory_{m}")))
    fig = figures.retraining(run)
    if fig is not None:
        out.append(("Before and after retraining", _save(fig, folder, "retraining")))
    fig = figures.strategies(run)
    if fig is not None:
        out.append(("Retraining strategies: MACs saved against test drop", _save(fig, folder, "strategies")))
    fig = figures.peers(run)
    if fig is not None:
        out.append(("The field side by side: MACs saved against test drop", _save(fig, folder, "peers")))
    return out


def _num(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CHECK_SCRIPT = """
window.crossneuronErrors = [];
window.addEventListener('error', e => window.crossneuronErrors.push(String(e.message || e)));
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.every(i => i.complete && i.naturalWidth > 0);
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-ok', ok ? 'yes' : 'no');
  document.body.setAttribute('data-errors', window.crossneuronErrors.length);
});
"""

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.4em}code{background:#f5f5f5;padding:0 3px}
"""


def _html(run: Run, figs: list[tuple[str, dict]]) -> str:
    s, r = run.summary, run.any_result()
    header, rows = headline_rows(run)
    identity = [
        ["checkpoint", r.checkpoint],
        ["weights hash", r.weights_hash],
        ["val split hash", r.val_hash],
        ["calibration images hash", r.calib_hash or "-"],
        ["calibration images", s["calib_images"]],
        ["check images (held out of val)", s.get("check_images", "-")],
        ["budget rule", s.get("budget", "net")],
        ["test images", r.test_images],
        ["no-prediction accuracy, calibration", f"{s['base_calib_accuracy']:.2f}%"],
        ["no-prediction accuracy, test", f"{r.test_base_accuracy:.2f}%"],
    ]  # fmt: skip
    options = [[k, json.dumps(v)] for k, v in r.options.items()]
    timing = [[m, f"{info['seconds']:.1f}"] for m, info in s["modes"].items()]
    timing.append(["whole run (incl. test-split measurements)", f"{s.get('seconds', 0):.1f}"])
    stages = [[m, st, v["evaluations"], v["estimated"], v["cut_short"], f"{v['seconds']:.1f}"]
              for (m, st), v in sorted(run.records.items())]  # fmt: skip
    screen = [[m, info["screen"]["sample"], f"{info['screen']['spearman']:.3f}",
               f"{info['screen']['mean_abs_error_points']:.3f}", info["screen"]["estimated_records"]]
              for m, info in s["modes"].items() if info.get("screen")]  # fmt: skip
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>crossneuron report</title>",
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>",
        f"<h1>crossneuron report: {html.escape(Path(r.checkpoint).name)}</h1>",
        "<p>Zero prediction from neighbouring activations: MACs saved (% of network MACs; in brackets % of site "
        "MACs) on the held-out test split, masks chosen on calibration images from the val split.</p>",
        "<h2>Headline</h2>",
        "<p>Each cell: MACs saved, % of network (% of sites) / test accuracy drop in points.</p>",
        _table(header, rows),
        "<h2>Calibration, check and test drop</h2>",
        _table(*drops_rows(run)),
        f"<p>Oracle (every true zero skipped): {r.oracle_pct_network:.2f}% of network "
        f"({r.oracle_pct_sites:.2f}% of sites).</p>",
    ]
    if run.compare:
        parts += ["<h2>The field side by side (<code>crossneuron compare</code>)</h2>",
                  _table(["scheme", "setting", "MACs saved (% of network)", "test drop (points)", "note"],
                         [[r["scheme"], r["setting"], _num(r["macs_saved_pct_network"]), _num(r["test_drop"]),
                           r["note"]] for r in run.compare["rows"]]),
                  f"<p>Oracle {run.compare['oracle_pct_network']:.2f}% of network MACs.</p>"]  # fmt: skip
    for title, fig in figs:
        parts.append(f"<figure><figcaption>{html.escape(title)}</figcaption>"
                     f"<img alt='{html.escape(title)}' src='data:image/png;base64,{fig['png']}'></figure>")  # fmt: skip
    parts += ["<h2>Run identity</h2>", _table(["", ""], identity),
              "<h2>Options</h2>", _table(["option", "value"], options),
              "<h2>Timings (seconds)</h2>", _table(["mode", "seconds"], timing),
              _table(["mode", "stage", "evaluations", "estimated", "cut short", "engine seconds"], stages)]  # fmt: skip
    if screen:
        parts += ["<h2>Screening proxy against exact evaluation</h2>",
                  _table(["mode", "sample", "Spearman rank correlation", "mean |error| (points)", "estimated records"],
                         screen)]  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> dict:
    """Write figures, ``table.md`` and ``report.html`` under ``out`` (default RUN_DIR/report)."""
    run = load_run(run_dir)
    folder = output_folder(Path(out) if out else run.path / "report")
    figs = _figures(run, folder)
    table = markdown(run)
    atomic_write(folder / "table.md", lambda tmp: Path(tmp).write_text(table))
    page = _html(run, figs)
    atomic_write(folder / "report.html", lambda tmp: Path(tmp).write_text(page))
    return {"html": str(folder / "report.html"), "table": table, "figures": [f["name"] for _, f in figs]}
