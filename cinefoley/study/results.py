"""What a coordinator reads from a running or finished study: progress, analysis, raw votes.

Reading is safe while participants vote (WAL readers never block the writers).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cinefoley.study.design import CATCH, TEST, Study
from cinefoley.study.stats import Analysis, analyze
from cinefoley.study.store import VOTE_COLUMNS, VoteStore
from cinefoley.utils import atomic_write_json, atomic_write_text


def load_votes(study: Study | str | Path) -> pd.DataFrame:
    """All votes, one row per participant × trial, with the systems' display names added."""
    study = study if isinstance(study, Study) else Study.load(study)
    with VoteStore(study.db_path) as store:
        votes = pd.DataFrame(store.votes(), columns=list(VOTE_COLUMNS))
    names = {**study.systems, "match": "own sound", "mismatch": "unrelated sound"}
    for column in ("a", "b", "chosen"):
        votes[f"{column}_name"] = votes[column].map(names)
    return votes


def study_status(study: Study | str | Path) -> dict:
    """Progress: per participant, how many trials are answered, how often they opened the link."""
    study = study if isinstance(study, Study) else Study.load(study)
    with VoteStore(study.db_path) as store:
        votes, visits = pd.DataFrame(store.votes(), columns=list(VOTE_COLUMNS)), store.visits()
    visits = pd.DataFrame(visits, columns=["participant", "opened_at", "resumed_at_trial"])
    people = sorted(set(votes["participant"]) | set(visits["participant"]))
    rows = []
    for pid in people:
        mine = votes[votes["participant"] == pid]
        rows.append({"participant": pid, "answered": len(mine), "of": study.n_trials,
                     "catch_failed": int(((mine["kind"] == CATCH) & (mine["chosen"] != "match")).sum()),
                     "visits": int((visits["participant"] == pid).sum()),
                     "last_vote": mine["voted_at"].max() if len(mine) else ""})
    table = pd.DataFrame(rows, columns=["participant", "answered", "of", "catch_failed", "visits", "last_vote"])
    return {"study": study.name, "trials_per_participant": study.n_trials, "clips": len(study.clips),
            "catch_trials": len(study.catch), "participants_seen": len(people),
            "participants_finished": int((table["answered"] >= study.n_trials).sum()),
            "test_votes": int((votes["kind"] == TEST).sum()), "catch_votes": int((votes["kind"] == CATCH).sum()),
            "participants": table}


def analyze_study(study: Study | str | Path, *, min_catch_accuracy: float = 1.0,
                  out_dir: str | Path | None = None) -> Analysis:
    """Table 2 and its statistics for a study; with ``out_dir``, also written there.

    Files: ``table2.csv``, ``per_participant.csv``, ``per_clip.csv`` and ``analysis.json``.
    """
    study = study if isinstance(study, Study) else Study.load(study)
    result = analyze(load_votes(study), study.systems, min_catch_accuracy=min_catch_accuracy)
    result.summary["study"] = study.name
    if out_dir is not None:
        out = Path(out_dir)
        atomic_write_text(out / "table2.csv", result.table.to_csv())
        atomic_write_text(out / "per_participant.csv", result.per_participant.to_csv())
        atomic_write_text(out / "per_clip.csv", result.per_clip.to_csv())
        atomic_write_json(out / "analysis.json", result.summary)
    return result


def export_votes(study: Study | str | Path, csv_path: str | Path) -> Path:
    """Write every raw vote (with system names) to ``csv_path``."""
    return atomic_write_text(csv_path, load_votes(study).to_csv(index=False))
