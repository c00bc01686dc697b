"""DEMO stimuli for trying the study before real generated videos exist. Not results of any model.

Each demo clip shows a coloured object that strikes (flashes and jumps) at a few instants. The "ours"
version sounds a tone burst at every strike; the "baseline" version has the same bursts at the wrong
instants and a lower pitch, so an attentive listener can tell which one matches.
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np

from cinefoley.study.media import write_mp4

SAMPLE_RATE = 16000


def make_demo_pairs(folder: str | Path, n_clips: int = 6, seed: int = 0, duration: float = 2.048,
                    fps: int = 4, size: int = 128) -> Path:
    """Write ``n_clips`` DEMO pairs (``demo-XX_baseline.mp4`` / ``demo-XX_ours.mp4``) and their pairs CSV.

    Returns the path of ``pairs.csv`` (columns ``clip_id, baseline, ours``), ready for
    :func:`cinefoley.study.create_study`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_frames = max(2, int(round(duration * fps)))
    n_samples = int(round(n_frames / fps * SAMPLE_RATE))
    rows = []
    for k in range(n_clips):
        clip_id = f"demo-{k:02d}"
        n_events = int(rng.integers(1, max(2, n_frames // 3) + 1))
        events = np.sort(rng.choice(n_frames, size=min(n_events, n_frames), replace=False))
        # The baseline's strikes are off by at least one frame (wrapping around the clip).
        shifted = (events + rng.integers(1, max(2, n_frames - 1), size=events.size)) % n_frames
        frames = _frames(rng, events, n_frames, size)
        pitch = float(rng.uniform(500, 1200))
        files = {}
        for system, times, hz in (("baseline", shifted, pitch * 0.6), ("ours", events, pitch)):
            files[system] = f"{clip_id}_{system}.mp4"
            write_mp4(folder / files[system], frames, fps, _bursts(times / fps, hz, n_samples), SAMPLE_RATE)
        rows.append({"clip_id": clip_id, **files})
    csv_path = folder / "pairs.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip_id", "baseline", "ours"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def _frames(rng: np.random.Generator, events: np.ndarray, n_frames: int, size: int) -> np.ndarray:
    hue = rng.random()
    background = np.array(colorsys.hsv_to_rgb(hue, 0.35, 0.35)) * 255
    colour = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1, 0.9, 0.9)) * 255
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    frames[:] = background.astype(np.uint8)
    side = size // 4
    x, y = (int(v) for v in rng.integers(0, size - side, size=2))
    for t in range(n_frames):
        strike = t in events
        dy = -side // 3 if strike else 0
        top = int(np.clip(y + dy, 0, size - side))
        frames[t, top:top + side, x:x + side] = 255 if strike else colour.astype(np.uint8)
    return frames


def _bursts(onsets_s: np.ndarray, hz: float, n_samples: int) -> np.ndarray:
    t = np.arange(n_samples) / SAMPLE_RATE
    audio = np.zeros(n_samples, np.float32)
    for onset in onsets_s:
        local = t - onset
        envelope = np.where(local >= 0, np.exp(-np.clip(local, 0, None) * 18.0), 0.0)
        audio += (0.6 * envelope * np.sin(2 * np.pi * hz * local)).astype(np.float32)
    return np.clip(audio, -1, 1)
