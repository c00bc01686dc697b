"""CAVP features of every clip, once, in Diff-Foley's layout: the teacher's c_t and the test sets' features.

``cinefoley vggsound features`` writes c_t = CAVP(x_v) of every clip as Diff-Foley stores it
(``<clip_id>.npz``, key ``feat``, float32 (T, 512), L2-normalised per frame), and, for CU/CM test
manifests, CAVP(x_v^f) of the varied clips under ``<variation>/<clip_id>.npz``. A clip is decoded once
(4 fps, native resolution) for all its outputs; a variation is applied to those frames at native
resolution and the result squash-resized to 224 like any clip. With ``frames`` (a frame store of
:mod:`cinefoley.worlds.vggsound.frames`) the frames are read from the store instead of the mp4. Existing
files are skipped, so a killed run resumes; unreadable videos are skipped and listed in ``unreadable.csv``.
Under ``torchrun`` rank r encodes clips r, r + W, … of the manifests (each file is one clip's alone, so any
number of ranks writes the same files) and rank 0 lists the unreadable clips of all ranks.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cinefoley.distill import read_feature
from cinefoley.distributed import barrier, gather, my_share, rank_world
from cinefoley.errors import MediaError
from cinefoley.progress import progress_bar
from cinefoley.media.video import load_video
from cinefoley.models.cavp import squash_resize, varied_input
from cinefoley.testsets import load_params
from cinefoley.utils import atomic_savez, write_run_record
from cinefoley.variations import VariationParams
from cinefoley.worlds.vggsound.frames import FrameStore, open_store
from cinefoley.worlds.vggsound.manifest import (FPS, MAX_FRAMES, UNREADABLE_COLUMNS, read_rows, resolve_path,
                                                start_of, write_csv)
from cinefoley.worlds.vggsound.testsets import clip_frames, probe_video


@dataclass
class _Clip:
    clip_id: str
    video: Path
    start_s: float
    n_frames: int | None  # None: read from the header
    targets: list[tuple[Path, VariationParams | None]] = field(default_factory=list)


@dataclass
class FeatureReport:
    """What :func:`extract_features` did: files written, files already there, clips that failed."""

    out_dir: Path
    written: int = 0
    existing: int = 0
    failed: list[dict] = field(default_factory=list)

    @property
    def unreadable(self) -> Path:
        return self.out_dir / "unreadable.csv"

    def __str__(self) -> str:
        return (f"{self.written} feature files written, {self.existing} already there, {len(self.failed)} clips "
                f"unreadable (listed in {self.unreadable}); features in {self.out_dir}")


def _plan(manifest: Path, variation_manifests: list[Path], out_dir: Path) -> dict[str, _Clip]:
    clips: dict[str, _Clip] = {}

    def clip_of(row, root: Path) -> _Clip:
        cid = row["clip_id"]
        if cid not in clips:
            n = row.get("n_frames", "")
            clips[cid] = _Clip(cid, resolve_path(root, row["video_path"]), start_of(row), int(n) if n else None)
        return clips[cid]

    df, root = read_rows(manifest)
    for _, row in df.iterrows():
        clip_of(row, root).targets.append((out_dir / f"{row['clip_id']}.npz", None))
    for vm in variation_manifests:
        df, root = read_rows(vm)
        if "variation_params" not in df:
            raise ValueError(f"{vm}: not a CU/CM test manifest (no variation_params column); "
                             "make one with `cinefoley vggsound testsets`")
        for _, row in df.iterrows():
            params = load_params(row)
            if params is None:
                continue
            kind = row["variation"] or params.kind
            clip_of(row, root).targets.append((out_dir / kind / f"{row['clip_id']}.npz", params))
    return clips


def _decode(clip: _Clip, *, store: FrameStore | None, fps: float, max_frames: int) -> torch.Tensor:
    needed = [p.n_frames for _, p in clip.targets if p is not None]
    if clip.n_frames is None and len(needed) < len(clip.targets) and store is not None and clip.clip_id in store:
        clip.n_frames = min(store.info(clip.clip_id)["n_frames"], max_frames)
    elif clip.n_frames is None and len(needed) < len(clip.targets):
        header = probe_video(clip.video)
        clip.n_frames = clip_frames(header.duration_s, clip.start_s, fps=fps, max_frames=max_frames)
    n = max(needed + ([clip.n_frames] if clip.n_frames is not None else []))
    if n < 1:
        raise MediaError(clip.video, f"no {fps:g}-fps frame after {clip.start_s:.3f} s")
    if store is not None:
        return store.load(clip.clip_id, clip.video, n_frames=n, start=clip.start_s)
    return load_video(clip.video, fps=fps, n_frames=n, start=clip.start_s)


def _prefetch(fn, items: list, workers: int):
    """``fn(item)`` for each item in order, computed ``workers`` at a time ahead of the consumer.

    Yields ``(item, result or exception)``; at most 2·workers results wait in memory.
    """
    def safe(item):
        try:
            return fn(item)
        except (MediaError, ValueError) as e:
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(safe, item)))
            if len(pending) >= 2 * max(1, workers):
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()


def extract_features(manifest: str | Path, encoder, out_dir: str | Path, *,
                     variation_manifests: list[str | Path] = (), fps: float = FPS, max_frames: int = MAX_FRAMES,
                     workers: int = 4, frames: str | Path | None = None, progress: bool = True) -> FeatureReport:
    """Write the teacher features of every clip of ``manifest`` and of the varied clips of CU/CM manifests.

    ``encoder`` is a :class:`~cinefoley.models.cavp.CAVPVideoEncoder` (on the device it should run
    on). Originals go to ``out_dir/<clip_id>.npz``, varied clips to ``out_dir/<variation>/<clip_id>.npz``;
    both hold ``feat`` (T, 512) float32. The number of frames is the manifest's ``n_frames`` (test
    manifests), else the 4-fps frames in the video, at most ``max_frames``. Files already there are
    not recomputed; clips that cannot be decoded are listed in ``out_dir/unreadable.csv``. Decoding
    runs ``workers`` clips ahead of the encoder, from the frame store ``frames`` when given.
    """
    started = time.time()
    out_dir = Path(out_dir)
    report = FeatureReport(out_dir)
    clips = _plan(Path(manifest), [Path(v) for v in variation_manifests], out_dir)
    todo = []
    for clip in my_share(list(clips.values())):
        missing = [(p, v) for p, v in clip.targets if not p.exists()]
        report.existing += len(clip.targets) - len(missing)
        if missing:
            clip.targets = missing
            todo.append(clip)

    if frames is not None and fps != FPS:
        raise ValueError(f"{frames}: a frame store holds {FPS:g}-fps frames; fps={fps:g} needs the videos")
    decode = partial(_decode, store=open_store(frames), fps=fps, max_frames=max_frames)
    for clip, video in progress_bar(_prefetch(decode, todo, workers), total=len(todo), desc="CAVP features",
                                    disable=not progress or not todo or rank_world()[0] != 0):
        try:
            if isinstance(video, Exception):
                raise video
            # clips of one length go through the encoder together
            groups: dict[int, list[tuple[Path, torch.Tensor]]] = {}
            for path, params in clip.targets:
                # at 224 px, so that an original and a varied clip of one length stack
                x_v = (squash_resize(video[:clip.n_frames]) if params is None
                       else varied_input(video[:params.n_frames], params))
                groups.setdefault(len(x_v), []).append((path, x_v))
            for items in groups.values():
                feats = encoder.encode(torch.stack([f for _, f in items])).float().cpu().numpy()
                for (path, _), feat in zip(items, feats):
                    atomic_savez(path, feat=feat.astype(np.float32))
                    report.written += 1
        except (MediaError, ValueError) as e:
            reason = e.reason if isinstance(e, MediaError) else str(e)
            report.failed.append({"clip_id": clip.clip_id, "video_path": str(clip.video), "reason": reason})

    report = _gathered(report, order=list(clips))
    if rank_world()[0] == 0:
        write_csv(report.unreadable, pd.DataFrame(report.failed, columns=UNREADABLE_COLUMNS))
        write_run_record(out_dir, name="features_run.json", started=started,
                         config={"manifest": str(manifest), "fps": fps, "max_frames": max_frames,
                                 "frames": None if frames is None else str(frames),
                                 "variation_manifests": [str(v) for v in variation_manifests]},
                         results={"written": report.written, "existing": report.existing,
                                  "failed": len(report.failed), "ranks": rank_world()[1]})
    barrier()  # the list of unreadable clips exists on return, on every rank
    return report


def _gathered(report: FeatureReport, order: list[str]) -> FeatureReport:
    """Every rank's report summed into one, failures in manifest order (as one process lists them)."""
    parts, position = gather(report), {cid: i for i, cid in enumerate(order)}
    failed = sorted((f for p in parts for f in p.failed), key=lambda f: position[f["clip_id"]])
    return FeatureReport(report.out_dir, written=sum(p.written for p in parts),
                         existing=sum(p.existing for p in parts), failed=failed)


def read_feature_dir(feature_dir: str | Path, clip_ids: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``{clip id: (T, C)}`` of the files ``feature_dir/<clip_id>.npz`` there are, of ``clip_ids`` (None: all)."""
    feature_dir = Path(feature_dir)
    if clip_ids is None:
        clip_ids = sorted(p.stem for p in feature_dir.glob("*.npz"))
    paths = {c: feature_dir / f"{c}.npz" for c in clip_ids}
    return {c: torch.from_numpy(read_feature(p)) for c, p in paths.items() if p.is_file()}
