"""SIMULATED participants, for demos and tests: they click through the real widget, not the store.

Each simulated participant opens :class:`StudyApp`, "plays" both clips (sets ``heard`` as the page
would) and presses a vote button, so the simulation exercises the same code path as a person.
An attentive participant prefers ours with probability ``p_ours`` and passes every catch trial; an
inattentive one answers at random.
"""

from __future__ import annotations

import random
from pathlib import Path

from cinefoley.study.design import BASELINE, CATCH, MATCH, OURS, Study
from cinefoley.study.store import VoteStore
from cinefoley.study.widget import StudyApp
from cinefoley.utils import stable_hash


def simulate_votes(study: Study | str | Path, participants: list[str], *, p_ours: float = 0.75,
                   inattentive: tuple[str, ...] | list[str] = (), seed: int = 0) -> int:
    """Let SIMULATED ``participants`` finish the study; returns the number of votes recorded."""
    study = study if isinstance(study, Study) else Study.load(study)
    recorded = 0
    with VoteStore(study.db_path) as store:
        for pid in participants:
            rng = random.Random(stable_hash(seed, "simulate", pid))
            app = StudyApp(study, pid, store)
            recorded += len(app.plan) - app.position
            while not app.finished:
                trial = app.current_trial
                for player in app.players:
                    player.heard = True
                if pid in inattentive:
                    choice = rng.choice("AB")
                else:
                    wanted = MATCH if trial.kind == CATCH else OURS if rng.random() < p_ours else BASELINE
                    choice = "A" if trial.a == wanted else "B"
                app.buttons["AB".index(choice)].click()
    return recorded
