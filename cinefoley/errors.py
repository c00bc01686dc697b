"""Errors that name the file and the reason, so a batch job can report and move on."""

from __future__ import annotations

from pathlib import Path


class MediaError(ValueError):
    """A video, audio or checkpoint file that cannot be used: ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(MediaError):
    """A checkpoint whose keys or shapes do not match the model it is meant for."""
