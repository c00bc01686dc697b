"""Progress bars that reach the person waiting, in a notebook and under the main job.

:class:`progress_bar` is tqdm (``tqdm.auto``: a widget in Jupyter, text in a terminal). Under the main job
(``cinefoley reproduce``, i.e. ``make demo``) each notebook runs in a papermill kernel whose output goes
into the executed notebook, not to the terminal the job was started from; so when the environment
variable ``CINEFOLEY_PROGRESS_FILE`` names a file, every bar also appends its state to it as a JSON
line (``desc``, ``n``, ``total``, ``unit``, ``postfix``, ``done``) — when it starts, at most every
``EVERY_S`` seconds, and when it closes — and :class:`ProgressRelay`, in the runner's process, draws
those as bars in the terminal.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

ENV = "CINEFOLEY_PROGRESS_FILE"
EVERY_S = 2.0


class progress_bar(auto_tqdm):  # noqa: N801 (a drop-in for tqdm, named like a function as tqdm is)
    """``tqdm.auto.tqdm`` that also reports to ``$CINEFOLEY_PROGRESS_FILE`` when it is set."""

    def __init__(self, *args, **kwargs):
        self._events = None if kwargs.get("disable") else os.environ.get(ENV)
        self._last = 0.0
        super().__init__(*args, **kwargs)
        self._emit(force=True)

    def update(self, n=1):
        shown = super().update(n)
        self._emit()
        return shown

    def close(self):
        if not getattr(self, "disable", True):
            self._emit(force=True, done=True)
        super().close()

    def _emit(self, *, force: bool = False, done: bool = False) -> None:
        now = time.monotonic()
        if self._events is None or (not force and now - self._last < EVERY_S):
            return
        self._last = now
        event = {"id": id(self), "desc": self.desc, "n": self.n, "total": self.total, "unit": self.unit,
                 "postfix": self.postfix or "", "done": done}
        with open(self._events, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


class ProgressRelay:
    """Draws the bars a notebook kernel reports through ``CINEFOLEY_PROGRESS_FILE`` in this terminal.

    ``with ProgressRelay(path):`` sets the variable for the kernels started inside the block, reads the
    file from a thread and keeps one text bar per reporting bar, closed when its bar closes.
    """

    def __init__(self, path: str | Path, *, stream=None, poll_s: float = 0.5):
        self.path, self.stream, self.poll_s = Path(path), stream or sys.stdout, poll_s
        self._bars: dict[int, text_tqdm] = {}
        self._stop = threading.Event()
        self._offset = 0

    def __enter__(self) -> ProgressRelay:
        self.path.write_text("")
        self._previous = os.environ.get(ENV)
        os.environ[ENV] = str(self.path)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        if self._previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()

    def _drain(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            f.seek(self._offset)
            lines = f.readlines()
            if lines and not lines[-1].endswith("\n"):  # a line being written: read it next time
                lines.pop()
            self._offset += sum(len(line.encode("utf-8")) for line in lines)
        for line in lines:
            self.show(json.loads(line))

    def show(self, event: dict) -> None:
        bar = self._bars.get(event["id"])
        if bar is None:
            bar = self._bars[event["id"]] = text_tqdm(total=event["total"], desc=f"      {event['desc']}",
                                                      unit=event["unit"], file=self.stream, leave=True,
                                                      dynamic_ncols=False, ncols=100, mininterval=0)
        if event["n"] < bar.n:  # the kernel reused the id of a bar that was never closed
            bar.reset(event["total"])
        bar.total = event["total"]
        bar.set_postfix_str(event["postfix"], refresh=False)
        bar.update(event["n"] - bar.n)
        if event["done"]:
            bar.close()
            del self._bars[event["id"]]
