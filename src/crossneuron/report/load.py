"""A run folder as plain data for the report: summary, baseline, results, records, retraining."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CrossneuronError
from ..result import Result, load_result


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CrossneuronError(f"{path} not found: pass a run folder written by `crossneuron optimize`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrossneuronError(f"{path} is corrupt ({exc}): re-run `crossneuron optimize` into that folder") from None


@dataclass
class Run:
    path: Path
    summary: dict
    baseline: dict | None
    results: dict[str, dict[float, Result]]  # mode -> eps -> result.json
    at_baseline: dict[str, Result]  # mode -> result.json at the baseline's calibration drop
    records: dict = field(default_factory=dict)  # stage counts, estimated, cut short, seconds
    retrain: list[dict] = field(default_factory=list)  # retrain.json files found under the run
    rounds: list[dict] = field(default_factory=list)  # rounds.json files (retrain --rounds) found under the run
    compare: dict | None = None  # compare/compare.json (`crossneuron compare`), where present

    @property
    def modes(self) -> list[str]:
        return list(self.results)

    @property
    def eps(self) -> list[float]:
        return sorted({e for r in self.results.values() for e in r})

    def any_result(self) -> Result:
        return next(iter(next(iter(self.results.values())).values()))

    def headline(self) -> tuple[str, float, Result]:
        """The mode saving the most network MACs at the largest epsilon, with that result."""
        eps = max(self.eps)
        mode = max(self.results, key=lambda m: self.results[m][eps].macs_saved_pct_network)
        return mode, eps, self.results[mode][eps]


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise CrossneuronError(f"{path} is not a folder: pass the --out folder of `crossneuron optimize`")
    summary = _json(path / "summary.json")
    baseline = _json(path / "baseline.json") if (path / "baseline.json").exists() else None
    results: dict[str, dict[float, Result]] = {}
    at_baseline = {}
    for mode, info in summary.get("modes", {}).items():
        results[mode] = {float(e): load_result(path / mode / f"eps-{e}" / "result.json") for e in info["eps"]}
        if (path / mode / "at-baseline" / "result.json").exists():
            at_baseline[mode] = load_result(path / mode / "at-baseline" / "result.json")
    if not results:
        raise CrossneuronError(f"{path / 'summary.json'} lists no modes: the search did not finish; re-run it")
    retrain = [_json(p) for p in sorted(path.glob("retrain*/retrain.json"))]
    rounds = [_json(p) for p in sorted(path.glob("retrain*/rounds.json"))]
    peers = _json(path / "compare" / "compare.json") if (path / "compare" / "compare.json").exists() else None
    return Run(path, summary, baseline, results, at_baseline, _records(path / "records.sqlite"), retrain, rounds,
               peers)


def strategy(record: dict) -> str:
    """A retraining's strategy in words, from its retrain.json (options at their defaults left out)."""
    parts = [f"{record['epochs']} ep"]
    if record.get("precision", "fp32") != "fp32":
        parts.append(record["precision"])
    if record.get("warmup"):
        parts.append(f"warm-up {record['warmup']:g}")
    if record.get("distill"):
        teacher = f", from {Path(record['teacher']).name}" if record.get("teacher") else ""
        parts.append(f"distill {record['distill']:g} (T {record.get('temperature', 4.0):g}{teacher})")
    if record.get("predictability"):
        slack = f", slack {record['slack']:g}" if record.get("slack") else ""
        parts.append(f"predictability {record['predictability']:g}{slack}")
    return ", ".join(parts)


def _records(db_path: Path) -> dict:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(evals)")}
        estimated = "SUM(estimated)" if "estimated" in columns else "0"
        rows = db.execute(
            f"SELECT mode, stage, COUNT(*), SUM(cut_short), {estimated}, SUM(seconds) FROM evals GROUP BY mode, stage"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise CrossneuronError(f"{db_path} is not a readable search database ({exc})") from None
    finally:
        db.close()
    return {(m, s): {"evaluations": n, "cut_short": c or 0, "estimated": e or 0, "seconds": t or 0.0}
            for m, s, n, c, e, t in rows}  # fmt: skip
