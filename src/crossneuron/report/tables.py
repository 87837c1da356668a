"""The headline table in the 2019 project's shape, as Markdown (and as rows for HTML)."""

from __future__ import annotations

from ..result import Result
from .load import Run

TABLE_EPS = (0.0, 0.5, 1.0, 3.0, 5.0)


def _cell(result: Result | dict | None) -> str:
    """% of network (% of sites) of a Result or of a measurement dict."""
    if result is None:
        return "-"
    get = result.get if isinstance(result, dict) else lambda k: getattr(result, k)
    return f"{get('macs_saved_pct_network'):.2f} ({get('macs_saved_pct_sites'):.2f})"


def headline_rows(run: Run) -> tuple[list[str], list[list[str]]]:
    header = ["mode"] + [f"eps {e:g}" for e in TABLE_EPS] + ["diagonal baseline: saving / drop",
                                                             "ours at the baseline's accuracy"]  # fmt: skip
    b = run.baseline["test"] if run.baseline else None
    base_cell = f"{_cell(b)} / {b['drop']:.2f}" if b else "-"
    rows = []
    for mode, by_eps in run.results.items():
        at = run.at_baseline.get(mode)
        ours = f"{_cell(at)} / {at.test_drop:.2f}" if at else "-"
        rows.append([mode] + [_cell(by_eps.get(e)) for e in TABLE_EPS] + [base_cell, ours])
    return header, rows


def markdown(run: Run) -> str:
    header, rows = headline_rows(run)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    r = run.any_result()
    lines += [
        "",
        "MACs saved on the test split in % of network MACs (in brackets: % of site MACs, the 2019 denominator); "
        "'/ x' is the test accuracy drop in points. eps is the budget on the calibration images; '-' where the run "
        f"did not ask for it. Oracle: {r.oracle_pct_network:.2f} ({r.oracle_pct_sites:.2f}). "
        f"Test images: {r.test_images}, no-prediction test accuracy {r.test_base_accuracy:.2f}%.",
    ]
    if run.retrain:
        lines += ["", "| retrained | epochs | test accuracy before -> after | MACs saved before -> after |",
                  "|---|---|---|---|"]  # fmt: skip
        for t in run.retrain:
            b, a = t["before"]["test"], t["after"]["test"]
            lines.append(f"| {t['mode']} eps {t['eps']:g} | {t['epochs']} | "
                         f"{b['accuracy']:.2f} -> {a['accuracy']:.2f} (no prediction {t['base_accuracy']:.2f}) | "
                         f"{_cell(b)} -> {_cell(a)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
