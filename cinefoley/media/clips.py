"""Clips from a manifest: frames through decord at 4 fps, sound through Diff-Foley's mel front end.

A manifest is a CSV with one row per clip and at least ``clip_id``, ``split``, ``video_path``
(relative to the manifest's folder, or absolute) and ``label``; ``audio_path`` when the sound is a
separate file (otherwise it is read from the video), and CineToy's ground truth (``class_id``,
``event_times``, ``boxes``) when present.

:func:`load_split` decodes a whole split once into tensors and caches them in an ``.npz`` keyed by
the manifest rows and the loading settings, so notebooks and training loops do not decode the same
files twice. Clips that cannot be read are skipped and reported, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cinefoley.progress import progress_bar
from cinefoley.errors import MediaError
from cinefoley.utils import atomic_savez, atomic_write_json
from cinefoley.media.video import load_video

MEL_FRAMES_PER_VIDEO_FRAME = 16  # hop 256 at 16 kHz against 4 fps


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest and resolve its paths against its folder (kept in ``df.attrs['root']``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype={"clip_id": str})
    missing = {"clip_id", "video_path"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    df.attrs["root"] = str(path.parent.resolve())
    return df


def resolve(df: pd.DataFrame, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(df.attrs.get("root", ".")) / p


@dataclass
class ClipTensors:
    """A split in memory: ``videos`` uint8 (N, T, 3, H, W), ``mels`` float32 (N, 128, 16·T)."""

    clip_ids: list[str]
    videos: torch.Tensor
    mels: torch.Tensor
    labels: torch.Tensor
    rows: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clip_ids)


def load_clip(df: pd.DataFrame, row: pd.Series, *, n_frames: int, size: int,
              fps: float = 4.0) -> tuple[torch.Tensor, np.ndarray]:
    """(frames uint8 (T, 3, size, size), mel (128, 16·T)) of one manifest row."""
    from cinefoley.media.audio import load_audio, mel_spectrogram

    video_path = resolve(df, row["video_path"])
    video = load_video(video_path, fps=fps, n_frames=n_frames, size=size,
                       start=float(row.get("start_s", 0.0) or 0.0))
    audio_rel = row.get("audio_path")
    audio_path = resolve(df, audio_rel) if isinstance(audio_rel, str) and audio_rel else video_path
    # mel frames = 16 per video frame: read exactly 256 · 16 · T samples (+1, cut by the front end)
    n_samples = 256 * MEL_FRAMES_PER_VIDEO_FRAME * n_frames
    wav = load_audio(audio_path, duration=(n_samples + 1) / 16000, offset=float(row.get("start_s", 0.0) or 0.0))
    mel = mel_spectrogram(wav[: n_samples + 1])
    return video, mel[:, : MEL_FRAMES_PER_VIDEO_FRAME * n_frames]


def _cache_key(df: pd.DataFrame, n_frames: int, size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([n_frames, size]).encode())
    h.update(df[["clip_id", "video_path"]].to_csv(index=False).encode())
    files = list(df["video_path"])
    if "audio_path" in df:
        files += [rel for rel in df["audio_path"] if isinstance(rel, str) and rel]
    for rel in files:  # content changes (a rebuilt world) must invalidate the cache
        p = resolve(df, rel)
        h.update(f"{p.stat().st_size}:{p.stat().st_mtime_ns}".encode() if p.exists() else b"missing")
    return h.hexdigest()[:16]


def load_split(df: pd.DataFrame, split: str | None = None, *, n_frames: int = 8, size: int = 64,
               cache_dir: str | Path | None = None, progress: bool = True) -> ClipTensors:
    """Decode every clip of ``split`` (all rows when None) into tensors, skipping unreadable clips."""
    rows = df if split is None else df[df["split"] == split]
    rows = rows.copy()
    rows.attrs = df.attrs
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"clips_{split or 'all'}_{_cache_key(rows, n_frames, size)}.npz"
        if cache.exists():
            z = np.load(cache, allow_pickle=False)
            keep = rows[rows["clip_id"].isin(set(z["clip_ids"].tolist()))]
            skipped = json.loads(str(z["skipped"]))
            return ClipTensors(z["clip_ids"].tolist(), torch.from_numpy(z["videos"]), torch.from_numpy(z["mels"]),
                               torch.from_numpy(z["labels"]), keep.reset_index(drop=True), skipped)
    ids, videos, mels, labels, skipped, kept = [], [], [], [], [], []
    for i, row in progress_bar(list(rows.iterrows()), desc=f"loading {split or 'clips'}", disable=not progress):
        try:
            v, m = load_clip(rows, row, n_frames=n_frames, size=size)
        except MediaError as e:
            skipped.append({"clip_id": row["clip_id"], "error": str(e)})
            continue
        ids.append(str(row["clip_id"]))
        videos.append(v)
        mels.append(torch.from_numpy(np.asarray(m, dtype=np.float32)))
        labels.append(int(row["class_id"]) if "class_id" in row and pd.notna(row["class_id"]) else -1)
        kept.append(i)
    if not ids:
        raise ValueError(f"no readable clips in split {split!r}: {skipped[:3]}")
    out = ClipTensors(ids, torch.stack(videos), torch.stack(mels), torch.tensor(labels),
                      rows.loc[kept].reset_index(drop=True), skipped)
    if cache is not None:
        atomic_savez(cache, clip_ids=np.array(ids), videos=out.videos.numpy(), mels=out.mels.numpy(),
                     labels=out.labels.numpy(), skipped=np.array(json.dumps(skipped)))
        if skipped:
            atomic_write_json(cache.with_suffix(".skipped.json"), skipped)
    return out
