"""Synthetic audio-visual clips for the model tests (a stand-in for CineToy, not part of the package).

Each clip shows one coloured blob of its class (colour and shape) at a random place on a noisy
background, plus a dimmer grey distractor; the blob flashes at the clip's event frames. The mel
holds a low noise floor and, at every event frame, a decaying harmonic stack whose pitch is the
class's. Layout follows the package conventions: video uint8 (N, T, 3, H, W) at 4 fps, mel float32
(N, 128, 16 T) in [0, 1], labels int64 (N,), event times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 80, 230], [230, 210, 40],
                    [200, 40, 200], [40, 210, 210], [240, 140, 30], [150, 90, 40],
                    [255, 255, 255], [120, 40, 160]], dtype=np.float32)


@dataclass
class SyntheticClips:
    videos: torch.Tensor       # uint8 (N, T, 3, H, W)
    mels: torch.Tensor         # float32 (N, 128, 16 T)
    labels: torch.Tensor       # int64 (N,)
    events: list[np.ndarray]   # event times (s) per clip
    event_frames: torch.Tensor  # bool (N, T)


def _shape_mask(kind: int, size: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float):
    dy, dx = yy - cy, xx - cx
    if kind == 0:
        return dy ** 2 + dx ** 2 <= r ** 2                      # disc
    if kind == 1:
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)             # square
    return np.abs(dy) + np.abs(dx) <= r * 1.3                   # diamond


def make_clips(n: int, num_classes: int = 8, frames: int = 8, size: int = 64, seed: int = 0,
               n_mels: int = 128) -> SyntheticClips:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    videos = np.empty((n, frames, 3, size, size), np.uint8)
    mels = np.empty((n, n_mels, 16 * frames), np.float32)
    event_frames = np.zeros((n, frames), bool)
    decay = np.exp(-np.arange(16 * frames) / 10.0)
    for i, c in enumerate(labels):
        k = rng.integers(1, 4)
        ev = np.sort(rng.choice(frames, size=k, replace=False))
        event_frames[i, ev] = True
        background = 40 + 25 * rng.random((3, size, size)).astype(np.float32)
        r = size * rng.uniform(0.14, 0.2)
        cy, cx = rng.uniform(r, size - r, 2)
        dy, dx = rng.uniform(r, size - r, 2)
        obj = _shape_mask(c % 3, size, yy, xx, cy, cx, r)
        distractor = _shape_mask(rng.integers(0, 3), size, yy, xx, dy, dx, r * 0.8)
        for t in range(frames):
            frame = background.copy()
            frame[:, distractor] = 110
            gain = 1.0 if event_frames[i, t] else 0.55
            frame[:, obj] = COLOURS[c % len(COLOURS), :, None] * gain
            videos[i, t] = np.clip(frame, 0, 255).astype(np.uint8)
        mel = 0.08 + 0.06 * rng.random((n_mels, 16 * frames)).astype(np.float32)
        base = 6 + int(c) * (n_mels - 30) // max(num_classes - 1, 1)
        envelope = np.zeros(16 * frames, np.float32)
        for f in ev:
            envelope[16 * f:] += decay[: 16 * (frames - f)]
        for h, amp in enumerate((0.75, 0.5, 0.3)):
            b = base + h * 9
            if b < n_mels:
                mel[b] += amp * envelope
                if b + 1 < n_mels:
                    mel[b + 1] += 0.5 * amp * envelope
        mels[i] = np.clip(mel, 0.0, 1.0)
    events = [np.flatnonzero(row) / 4.0 for row in event_frames]
    return SyntheticClips(torch.from_numpy(videos), torch.from_numpy(mels), torch.from_numpy(labels),
                          events, torch.from_numpy(event_frames))
