"""The vote store: one SQLite database (WAL) shared by every participant's kernel.

Voilà runs one kernel process per participant, so many processes write at once. WAL lets readers
(status, analysis) run beside a writer; ``BEGIN IMMEDIATE`` takes the write lock up front, so two
writers queue on ``busy_timeout`` instead of deadlocking on a lock upgrade. A vote is committed with
``synchronous=FULL`` before the next trial is shown, so a killed server (or machine) loses no vote
that a participant saw accepted. ``(participant, trial)`` is the primary key and inserts are
``OR IGNORE``: a double click, a second tab or a replay after a crash cannot count a trial twice.
The database must live on a local disk (WAL needs shared memory; not NFS/SMB).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol


class Trial(Protocol):
    """What a vote records of a trial (:class:`cinefoley.study.design.Trial` has these fields)."""

    index: int
    kind: str
    item: str
    a: str
    b: str

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    participant TEXT NOT NULL,
    trial INTEGER NOT NULL,          -- position in the participant's plan, 0-based
    kind TEXT NOT NULL,              -- 'test' or 'catch'
    item TEXT NOT NULL,              -- clip id or catch id
    a TEXT NOT NULL,                 -- option played as A (left): baseline/ours or match/mismatch
    b TEXT NOT NULL,                 -- option played as B (right)
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B')),
    chosen TEXT NOT NULL,            -- the option behind the choice
    response_s REAL,                 -- seconds from the trial being shown to the vote
    voted_at TEXT NOT NULL,
    PRIMARY KEY (participant, trial)
);
CREATE TABLE IF NOT EXISTS visits (
    participant TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    resumed_at_trial INTEGER NOT NULL
);
"""
VOTE_COLUMNS = ("participant", "trial", "kind", "item", "a", "b", "choice", "chosen", "response_s", "voted_at")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"


class VoteStore:
    """Votes of one study. Open one per process (each participant kernel has its own)."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode=WAL")  # persistent in the file; cheap when already set
        self._db.execute("PRAGMA synchronous=FULL")
        with self._write():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self._db.execute(statement)

    @contextmanager
    def _write(self):
        """``BEGIN IMMEDIATE … COMMIT`` (rollback on error): take the write lock before reading."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record(self, participant: str, trial: Trial, choice: str, response_s: float | None = None) -> bool:
        """Commit one vote; ``False`` when this participant had already voted on this trial."""
        if choice not in ("A", "B"):
            raise ValueError(f"choice must be 'A' or 'B', got {choice!r}")
        chosen = trial.a if choice == "A" else trial.b
        with self._write():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (participant, trial.index, trial.kind, trial.item, trial.a, trial.b, choice, chosen,
                 None if response_s is None else round(float(response_s), 3), _now()))
            return cur.rowcount == 1

    def log_visit(self, participant: str, resumed_at_trial: int) -> None:
        with self._write():
            self._db.execute("INSERT INTO visits VALUES (?, ?, ?)", (participant, _now(), resumed_at_trial))

    def answered(self, participant: str) -> set[int]:
        rows = self._db.execute("SELECT trial FROM votes WHERE participant = ?", (participant,))
        return {r[0] for r in rows}

    def next_trial(self, participant: str, n_trials: int) -> int:
        """The first trial of the plan without a vote (``n_trials`` when all are answered)."""
        done = self.answered(participant)
        return next((i for i in range(n_trials) if i not in done), n_trials)

    def votes(self) -> list[dict]:
        rows = self._db.execute(f"SELECT {', '.join(VOTE_COLUMNS)} FROM votes ORDER BY participant, trial")
        return [dict(zip(VOTE_COLUMNS, r)) for r in rows]

    def visits(self) -> list[dict]:
        rows = self._db.execute("SELECT participant, opened_at, resumed_at_trial FROM visits ORDER BY rowid")
        return [dict(zip(("participant", "opened_at", "resumed_at_trial"), r)) for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "VoteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

