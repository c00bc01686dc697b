"""The participant's screen (ipywidgets): one trial at a time, A on the left, B on the right.

The same widget runs inside notebook 07 and, served by Voilà, as the participants' web page. It
only ever sends the page neutral labels (A/B, "Pair 3 of 31") and the stimuli's bytes; which system
is behind A or B stays in this Python object. The vote buttons open once both clips have been
played (``ClipPlayer.heard``), and a vote is committed to the store before the next trial is shown.
"""

from __future__ import annotations

import sqlite3
import time

import ipywidgets as widgets

from cinefoley.study.design import Study, Trial, check_participant_id
from cinefoley.study.player import ClipPlayer
from cinefoley.study.store import VoteStore

INSTRUCTIONS = (
    "<h3>Which sound fits the video better?</h3>"
    "<p>A and B show the same video with two different soundtracks. Play both to the end (you may play "
    "them again), then choose the one whose sound matches what you see better.</p>"
    "<p>Your answers are saved as you go: if you close this page or it stops responding, open your "
    "link again and you will continue where you left off.</p>")


class StudyApp(widgets.VBox):
    """A/B forced-choice trials of ``study`` for ``participant``, resuming at the first unanswered one."""

    def __init__(self, study: Study, participant: str, store: VoteStore | None = None):
        self.study = study
        self.participant = check_participant_id(participant)
        self.store = store or VoteStore(study.db_path)
        self.plan = study.plan(participant)
        self.players = tuple(ClipPlayer(label=s, min_fraction=study.min_play_fraction) for s in "AB")
        self.buttons = tuple(widgets.Button(description=f"{s} matches better", disabled=True,
                                            button_style="primary", layout=widgets.Layout(width="220px"))
                             for s in "AB")
        self.progress = widgets.HTML()
        self.message = widgets.HTML()
        for player in self.players:
            player.observe(self._update_buttons, "heard")
        for button, choice in zip(self.buttons, "AB"):
            button.on_click(lambda _, choice=choice: self.vote(choice))
        sides = [widgets.VBox([p, b], layout=widgets.Layout(align_items="center"))
                 for p, b in zip(self.players, self.buttons)]
        self.trials = widgets.HBox(sides, layout=widgets.Layout(justify_content="center"))
        super().__init__([widgets.HTML(INSTRUCTIONS), self.progress, self.trials, self.message])
        self.position = self.store.next_trial(self.participant, len(self.plan))
        self.store.log_visit(self.participant, self.position)
        self._show()

    def __repr__(self) -> str:  # the default repr would spell out every clip's bytes
        return f"StudyApp(participant={self.participant!r}, position={self.position}, trials={len(self.plan)})"

    @property
    def current_trial(self) -> Trial | None:
        return self.plan[self.position] if self.position < len(self.plan) else None

    @property
    def finished(self) -> bool:
        return self.current_trial is None

    def vote(self, choice: str) -> bool:
        """Record ``choice`` ("A" or "B") for the current trial, then show the next one.

        Refused (``False``) until both clips have been heard; an answer that cannot be saved keeps the
        trial on screen with a message, so nothing moves on without being stored.
        """
        trial = self.current_trial
        if trial is None or not all(p.heard for p in self.players):
            return False
        for button in self.buttons:
            button.disabled = True
        try:
            self.store.record(self.participant, trial, choice, time.monotonic() - self._shown_at)
        except sqlite3.Error:
            self.message.value = "<b>Your answer could not be saved. Please choose again.</b>"
            self._update_buttons()
            return False
        # The store, not a local counter, says what comes next: a second tab may have answered too.
        self.position = self.store.next_trial(self.participant, len(self.plan))
        self._show()
        return True

    def _show(self) -> None:
        self.message.value = ""
        trial = self.current_trial
        if trial is None:
            for player in self.players:
                with player.hold_sync():
                    player.value, player.heard = b"", False
            self.trials.layout.display = "none"
            self.progress.value = (f"<h3>Thank you!</h3><p>You have answered all {len(self.plan)} pairs. "
                                   "You can close this page now.</p>")
            return
        for player, side in zip(self.players, "ab"):
            with player.hold_sync():
                player.value, player.heard = self.study.media_path(trial, side).read_bytes(), False
        self.progress.value = f"<b>Pair {trial.index + 1} of {len(self.plan)}</b>"
        self._shown_at = time.monotonic()
        self._update_buttons()

    def _update_buttons(self, _change=None) -> None:
        ready = not self.finished and all(p.heard for p in self.players)
        for button in self.buttons:
            button.disabled = not ready
