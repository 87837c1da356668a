"""The headline table in the 2019 project's shape, as Markdown (and as rows for HTML)."""

from __future__ import annotations

from ..result import Result
from .load import Run, strategy

TABLE_EPS = (0.0, 0.5, 1.0, 3.0, 5.0)


def _cell(result: Result | dict | None) -> str:
    """% of network (% of sites) / test drop of a Result or of a test measurement dict: never a saving
    without its drop."""
    if result is None:
        return "-"
    if isinstance(result, dict):
        net, sites, drop = result["macs_saved_pct_network"], result["macs_saved_pct_sites"], result["drop"]
    else:
        net, sites, drop = result.macs_saved_pct_network, result.macs_saved_pct_sites, result.test_drop
    return f"{net:.2f} ({sites:.2f}) / {drop:.2f}"


def _drop(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def headline_rows(run: Run) -> tuple[list[str], list[list[str]]]:
    header = ["mode"] + [f"eps {e:g}" for e in TABLE_EPS] + ["diagonal baseline", "ours at the baseline's budget"]
    b = run.baseline["test"] if run.baseline else None
    rows = []
    for mode, by_eps in run.results.items():
        rows.append([mode] + [_cell(by_eps.get(e)) for e in TABLE_EPS] + [_cell(b), _cell(run.at_baseline.get(mode))])
    return header, rows


def drops_rows(run: Run) -> tuple[list[str], list[list[str]]]:
    """Per mode and epsilon: the accuracy drop on the calibration images (searched on), the check images
    (held out of val, never searched on) and the test split, beside the test-split saving."""
    header = ["mode", "eps", "calibration drop", "check drop", "test drop", "% network MACs saved (test)"]
    rows = []
    for mode, by_eps in run.results.items():
        for e, r in sorted(by_eps.items()):
            rows.append([mode, f"{e:g}", _drop(r.calib_drop), _drop(r.check_drop), _drop(r.test_drop),
                         f"{r.macs_saved_pct_network:.2f}"])  # fmt: skip
    if run.baseline:
        b, check = run.baseline, run.baseline.get("check")
        rows.append(["diagonal baseline", "-", _drop(b["calib"]["drop"]), _drop(check and check["drop"]),
                     _drop(b["test"]["drop"]), f"{b['test']['macs_saved_pct_network']:.2f}"])  # fmt: skip
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(run: Run) -> str:
    lines = _markdown_table(*headline_rows(run))
    r = run.any_result()
    budget = r.options.get("budget", "net")
    lines += [
        "",
        "MACs saved on the test split in % of network MACs (in brackets: % of site MACs, the 2019 denominator); "
        f"'/ x' is the test accuracy drop in points. eps is the budget (rule '{budget}') on the calibration images; "
        f"'-' where the run did not ask for it. Oracle: {r.oracle_pct_network:.2f} ({r.oracle_pct_sites:.2f}). "
        f"Test images: {r.test_images}, no-prediction test accuracy {r.test_base_accuracy:.2f}%."
        + (f" Zero tolerance (--zero-below {r.options['zero_below']:g}): a computed value at most that fraction of "
           "its site's mean positive activation counts as zero (not SPEC 4's exact rule)."
           if r.options.get("zero_below") else ""),
        "",
    ]
    lines += _markdown_table(*drops_rows(run))
    lines += ["", "Drops in points: calibration images (the search sees them), check images (held out of val, "
              "never seen by the search) and the test split."]  # fmt: skip
    if run.retrain:
        lines += ["", "| retrained | strategy | test accuracy before -> after | MACs saved before -> after | "
                  "drop against the original, after |", "|---|---|---|---|---|"]  # fmt: skip
        for t in run.retrain:
            b, a = t["before"]["test"], t["after"]["test"]
            lines.append(f"| {t['mode']} eps {t['eps']:g} | {strategy(t)} | "
                         f"{b['accuracy']:.2f} -> {a['accuracy']:.2f} (no prediction {t['base_accuracy']:.2f}) | "
                         f"{_cell(b)} -> {_cell(a)} | {t['base_accuracy'] - a['accuracy']:.2f} |")  # fmt: skip
    for summary in run.rounds:
        lines += ["", f"Search-retrain rounds, {summary['mode']} eps {summary['eps']:g} (drops against the original "
                  "model's test accuracy):", "",
                  "| round | eps searched | test accuracy | MACs saved (test) | oracle | masks kept |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in summary["rounds"]:
            s = r.get("chosen", r["searched"])  # rounds before 0.8 kept the search's masks
            lines.append(f"| {r['round']} | {r['eps_searched']:g} | {s['accuracy']:.2f} | "
                         f"{s['macs_saved_pct_network']:.2f} / {s['drop_vs_original']:.2f} | "
                         f"{s['oracle_pct_network']:.2f} | {r.get('kept', 'searched')} |")  # fmt: skip
    return "\n".join(lines) + "\n"
