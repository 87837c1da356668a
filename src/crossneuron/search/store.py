"""Records in SQLite: the run's identity and every evaluation, each committed on its own.

A SIGKILL at any moment leaves the database as of the last committed evaluation (SQLite's
journal); re-running the same search finds its evaluations here and resumes. A database made
for another checkpoint or other options is refused.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import CrossneuronError
from .records import EvalResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evals (
    id INTEGER PRIMARY KEY,
    key TEXT UNIQUE NOT NULL,          -- stage|mode|target|candidate: what was evaluated, in words
    config TEXT NOT NULL,              -- sha1 of the canonical per-site plans
    stage TEXT NOT NULL,               -- first, patch, channel, layer, base
    mode TEXT NOT NULL,
    site INTEGER, channel INTEGER, block INTEGER,
    pattern INTEGER,                   -- pattern code (first level)
    candidate INTEGER,                 -- candidate index (quantizers) or step (layer quantizer)
    correct INTEGER NOT NULL, images INTEGER NOT NULL,
    macs_saved INTEGER NOT NULL, mispredicted INTEGER NOT NULL,
    seconds REAL NOT NULL,
    engine TEXT NOT NULL,
    cut_short INTEGER NOT NULL DEFAULT 0,  -- 1: stopped early; correct is an upper bound
    estimated INTEGER NOT NULL DEFAULT 0,  -- 1: screened; correct is a first-order estimate
    lost INTEGER                           -- images right at base and wrong here (NULL before 0.5)
);
CREATE INDEX IF NOT EXISTS evals_config ON evals(config);
"""


@dataclass(frozen=True)
class Where:
    """Descriptive columns of one evaluation."""

    stage: str
    mode: str
    site: int | None = None
    channel: int | None = None
    block: int | None = None
    pattern: int | None = None
    candidate: int | None = None

    @property
    def key(self) -> str:
        return "|".join(str(v) for v in (self.stage, self.mode, self.site, self.channel, self.block, self.pattern,
                                         self.candidate))  # fmt: skip


class Store:
    def __init__(self, path: str | Path, identity: dict):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None)  # autocommit; explicit transactions
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(evals)")}
            if "estimated" not in columns:  # a database from before screening: every record is exact
                self.db.execute("ALTER TABLE evals ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0")
            if "lost" not in columns:  # a database from before the budget rules: lost unknown (NULL)
                self.db.execute("ALTER TABLE evals ADD COLUMN lost INTEGER")
            rows = dict(self.db.execute("SELECT key, value FROM run").fetchall())
        except sqlite3.OperationalError as exc:
            if _permission(exc):
                raise CrossneuronError(_cannot_write(path, exc)) from None
            raise CrossneuronError(f"{path} is not a readable search database ({exc}): use another --out") from None
        except sqlite3.DatabaseError as exc:
            raise CrossneuronError(f"{path} is not a readable search database ({exc}): use another --out") from None
        if not rows:
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    self.db.executemany("INSERT INTO run VALUES (?, ?)",
                                        [(k, json.dumps(v)) for k, v in identity.items()])  # fmt: skip
            except sqlite3.OperationalError as exc:
                raise CrossneuronError(_cannot_write(path, exc)) from None
        else:
            stored = {k: json.loads(v) for k, v in rows.items()}
            differ = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
            if differ:
                raise CrossneuronError(
                    f"{path} belongs to another search (differs in: {', '.join(differ)}): use another --out, "
                    f"or the same checkpoint and options to resume"
                )
        self.path = path

    def find(self, where: Where, config: str) -> EvalResult | None:
        row = self.db.execute(
            "SELECT correct, images, macs_saved, mispredicted, seconds, cut_short, estimated, lost, config FROM evals "
            "WHERE key = ?",
            (where.key,),
        ).fetchone()
        if row is not None:
            if row[8] != config:
                raise CrossneuronError(
                    f"{self.path}: record '{where.key}' was made for other masks; the database does not belong "
                    "to this search: use another --out"
                )
            row = row[:8]
        else:
            row = self.db.execute(
                "SELECT correct, images, macs_saved, mispredicted, 0.0, cut_short, estimated, lost FROM evals "
                "WHERE config = ? AND cut_short = 0 AND estimated = 0 AND lost IS NOT NULL LIMIT 1",
                (config,),
            ).fetchone()
            if row is not None:  # the same masks evaluated in another context: same numbers
                self.add(where, config, EvalResult(*row[:4], seconds=0.0, lost=row[7]), "reused")
        if row is None or row[7] is None:  # none, or made before lost was counted: evaluate again
            return None
        return EvalResult(*row[:5], cut_short=bool(row[5]), estimated=bool(row[6]), lost=row[7])

    def add(self, where: Where, config: str, result: EvalResult, engine: str) -> None:
        self.add_many([(where, config, result)], engine)

    def add_many(self, rows, engine: str) -> None:
        """(where, config, result) rows in one transaction (screened estimates come by the thousand)."""
        try:
            self._add_many(rows, engine)
        except sqlite3.OperationalError as exc:
            if _permission(exc):
                raise CrossneuronError(_cannot_write(self.path, exc)) from None
            raise

    def _add_many(self, rows, engine: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO evals (key, config, stage, mode, site, channel, block, pattern, candidate,"
                " correct, images, macs_saved, mispredicted, seconds, engine, cut_short, estimated, lost)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(where.key, config, where.stage, where.mode, where.site, where.channel, where.block, where.pattern,
                  where.candidate, result.correct, result.images, result.macs_saved, result.mispredicted,
                  result.seconds, engine, int(result.cut_short), int(result.estimated), result.lost)
                 for where, config, result in rows],
            )  # fmt: skip

    def reuse(self, rows: list[tuple]) -> None:
        """Import another run's records (``reusable_records``) under ``reused|<their key>``, never
        under a key of this search: ``find``'s fallback then finds them by their masks."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR IGNORE INTO evals (key, config, stage, mode, site, channel, block, pattern, candidate,"
                " correct, images, macs_saved, mispredicted, seconds, engine, cut_short, estimated, lost)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,0,?)",
                [("reused|" + r[0].removeprefix("reused|"), *r[1:]) for r in rows],
            )

    def keys(self, prefix: str) -> set[str]:
        """Keys of the records whose key starts with ``prefix``."""
        rows = self.db.execute("SELECT key FROM evals WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {r[0] for r in rows}

    def count(self) -> int:
        """Records of this search (those imported by ``reuse`` are not its own)."""
        return self.db.execute("SELECT COUNT(*) FROM evals WHERE substr(key, 1, 7) != 'reused|'").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def reusable_records(other: str | Path, identity: dict, same: tuple[str, ...]) -> list[tuple]:
    """The exact, complete records of another run's database (``other``: a run folder or its
    records.sqlite), refused in one line unless its identity agrees with ``identity`` on ``same``
    (dotted keys, e.g. ``options.patch_size``): the same masks on the same images give the same
    record, so a search under another budget rule or epsilon need not evaluate them again."""
    other = Path(other)
    other = other / "records.sqlite" if other.is_dir() else other
    try:
        src = sqlite3.connect(f"file:{other}?mode=ro", uri=True)
        try:
            theirs = {k: json.loads(v) for k, v in src.execute("SELECT key, value FROM run")}
            rows = src.execute(
                "SELECT key, config, stage, mode, site, channel, block, pattern, candidate, correct, images, "
                "macs_saved, mispredicted, seconds, engine, lost FROM evals "
                "WHERE cut_short = 0 AND estimated = 0 AND lost IS NOT NULL"
            ).fetchall()
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise CrossneuronError(f"{other} is not a readable search database ({exc}): pass a run folder's "
                               "records.sqlite to reuse") from None  # fmt: skip
    differ = [k for k in same if _dotted(identity, k) != _dotted(theirs, k)]
    if differ:
        raise CrossneuronError(f"{other} was searched on other images or masks (differs in: {', '.join(differ)})"
                               ": its records cannot be reused here")  # fmt: skip
    return rows


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _permission(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text or "permission" in text


def _cannot_write(path: Path, exc: Exception) -> str:
    return (f"cannot write the search database {path} ({exc}): the search needs to add records there; check the "
            "permissions of that file and folder, or use another --out")  # fmt: skip
