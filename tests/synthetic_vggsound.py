"""A tiny VGGSound-shaped folder for the real-tier tests: mp4 clips, the official CSV and a manifest.

Clips are ``<YouTube ID>_<start:06d>.mp4``, already cut (``start_s`` 0), by default 2.625 s at 8 fps, so
10 frames at 4 fps; the lower half of each frame is brighter than the upper half, so that crops change
what an encoder sees. With ``audio=True`` each clip carries a mono AAC track (a tone per label plus
noise). One row of the CSV names a file that is not a video, and one a clip nobody downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cinefoley.worlds.vggsound.manifest import build_manifest
from cinefoley.media.video import write_video

#: (YouTube ID, start, (H, W), split, label)
CLIPS = [("land-scape", 1, (48, 64), "train", "dog barking"),
         ("port_rait", 30, (64, 48), "train", "cat purring"),
         ("square", 2, (48, 48), "train", "dog barking"),
         ("wide", 4, (40, 72), "train", "cat purring"),
         ("test-a", 3, (48, 64), "test", "dog barking"),
         ("test-b", 5, (64, 48), "test", "cat purring")]
GARBAGE = ("garbage", 5, "train", "church bell ringing")
FRAMES_4FPS = 10


def clip_ids(split: str | None = None) -> list[str]:
    return [f"{y}_{s:06d}" for y, s, _, sp, _ in CLIPS if split in (None, sp)]


def write_vggsound(root: Path, seed: int = 0, *, seconds: float = 2.625, fps: float = 8.0, audio: bool = False) -> Path:
    """Write videos/, vggsound.csv and manifest.csv under ``root``; returns the manifest's path."""
    rng = np.random.default_rng(seed)
    lines = []
    t = np.arange(int(seconds * 16000)) / 16000
    for ytid, start, (h, w), split, label in CLIPS:
        frames = rng.integers(0, 256, (round(seconds * fps), h, w, 3), dtype=np.uint8)
        frames[:, : h // 2] //= 3
        sound = None
        if audio:
            pitch = 220.0 * (1 + sorted({c[4] for c in CLIPS}).index(label))
            sound = (0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        write_video(root / "videos" / f"{ytid}_{start:06d}.mp4", frames, fps=fps, audio=sound)
        lines.append(f"{ytid},{start},{label},{split}")
    ytid, start, split, label = GARBAGE
    (root / "videos" / f"{ytid}_{start:06d}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    lines += [f"{ytid},{start},{label},{split}", "not-downloaded,7,cat purring,train"]
    (root / "vggsound.csv").write_text("\n".join(lines) + "\n")
    build_manifest(root / "vggsound.csv", root / "videos", root / "manifest.csv")
    return root / "manifest.csv"
