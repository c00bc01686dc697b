"""The real tier's data steps: VGG-CU / VGG-CM test manifests and CAVP teacher features, once per clip.

``cinefoley vggsound testsets`` turns a VGGSound manifest (:mod:`cinefoley.data.vggsound`) into the
paper's test sets by the deterministic recipe of :mod:`cinefoley.data.testsets`. Windows are placed on
each clip's own frame size, so the size and length of every test video are read once from its header
(PyAV, no decoding) and cached in the manifest's ``height``, ``width``, ``duration_s`` and
``n_frames`` columns. ``n_frames`` is the number of 4-fps frames from ``start_s``, at most 40: a 10-s
VGGSound clip gives Diff-Foley's (40, 512) feature layout, of which the LDM and Align Acc use the first 32.

``cinefoley features`` writes c_t = CAVP(x_v) of every clip as Diff-Foley stores it
(``<clip_id>.npz``, key ``feat``, float32 (T, 512), L2-normalised per frame), and, for CU/CM test
manifests, CAVP(x_v^f) of the varied clips under ``<variation>/<clip_id>.npz``. A clip is decoded once
(4 fps, native resolution) for all its outputs; a variation is applied to those frames at native
resolution and the result squash-resized to 224 like any clip. Existing files are skipped, so a killed
run resumes; unreadable videos are skipped and listed in ``unreadable.csv``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cinefoley.data.testsets import load_params, write_testsets
from cinefoley.errors import MediaError
from cinefoley.utils import atomic_savez, atomic_write_bytes, write_run_record
from cinefoley.variations import VariationParams, apply
from cinefoley.video import load_video

FPS = 4.0
#: Frames of a 10-s clip at 4 fps: Diff-Foley's stored feature length (the LDM window is 32).
MAX_FRAMES = 40
FRAME_COLUMNS = ("height", "width", "duration_s", "n_frames")
UNREADABLE_COLUMNS = ("clip_id", "video_path", "reason")


@dataclass(frozen=True)
class VideoHeader:
    """What a video's header says: frame size in pixels and the video stream's length in seconds."""

    height: int
    width: int
    duration_s: float


def probe_video(path: str | Path) -> VideoHeader:
    """Frame size and duration of ``path``'s first video stream, from the container header only."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1e6
    except av.error.FFmpegError as e:
        raise MediaError(path, f"cannot read the video header (truncated or not a video?): {e}") from None
    if height <= 0 or width <= 0 or duration <= 0:
        raise MediaError(path, f"header gives no usable size/length ({width}x{height}, {duration:.3f} s)")
    return VideoHeader(height, width, duration)


def clip_frames(duration_s: float, start_s: float = 0.0, *, fps: float = FPS, max_frames: int = MAX_FRAMES) -> int:
    """4-fps frames from ``start_s`` that :func:`cinefoley.video.load_video` can read, at most ``max_frames``."""
    return max(0, min(max_frames, math.floor((duration_s - start_s) * fps + 1e-6)))


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def _start(row) -> float:
    value = row.get("start_s", "")  # manifests are read as text here
    return float(value) if value else 0.0


def _read_rows(path: Path) -> tuple[pd.DataFrame, Path]:
    """A manifest with every column as text (ids are written back exactly as read), and its folder."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"clip_id", "video_path"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    return df, path.parent.resolve()


def add_frame_info(df: pd.DataFrame, root: Path, rows: pd.Series, *, max_frames: int = MAX_FRAMES,
                   fps: float = FPS) -> list[dict]:
    """Fill ``height``/``width``/``duration_s``/``n_frames`` of the ``rows`` (a mask) of a string-typed manifest.

    Headers already in the manifest are reused; ``n_frames`` is recomputed from ``duration_s``, so a
    new ``max_frames`` needs no probing. Returns the clips that could not be used, with the reason.
    """
    for col in FRAME_COLUMNS:
        if col not in df:
            df[col] = ""
    failures = []
    todo = df.index[rows]
    for i in tqdm(todo, desc="video headers", disable=len(todo) < 2):
        row = df.loc[i]
        try:
            if row["height"] == "" or row["width"] == "" or row["duration_s"] == "":
                header = probe_video(_resolve(root, row["video_path"]))
                df.loc[i, ["height", "width", "duration_s"]] = [str(header.height), str(header.width),
                                                                f"{header.duration_s:.6f}"]
            n = clip_frames(float(df.loc[i, "duration_s"]), _start(row), fps=fps, max_frames=max_frames)
            if n < 1:
                raise MediaError(_resolve(root, row["video_path"]), f"no {fps:g}-fps frame after "
                                 f"{_start(row):.3f} s (video is {float(df.loc[i, 'duration_s']):.3f} s)")
            df.loc[i, "n_frames"] = str(n)
        except MediaError as e:
            df.loc[i, "n_frames"] = ""
            failures.append({"clip_id": row["clip_id"], "video_path": row["video_path"], "reason": e.reason})
    return failures


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write_bytes(path, df.to_csv(index=False).encode())


@dataclass
class TestsetReport:
    """What :func:`build_vggsound_testsets` wrote."""

    testsets: dict[str, Path]
    unreadable: Path
    clips: int
    failed: int

    def __str__(self) -> str:
        sets = ", ".join(f"{k}: {v}" for k, v in self.testsets.items())
        return f"{self.clips} test clips ({self.failed} unreadable, listed in {self.unreadable}); {sets}"


def build_vggsound_testsets(manifest: str | Path, out_dir: str | Path, *, split: str = "test", seed: int = 0,
                            a1: float = 0.4, a2: float = 0.6, max_frames: int = MAX_FRAMES) -> TestsetReport:
    """Write ``<split>_original.csv``, ``<split>_cu.csv`` and ``<split>_cm.csv`` (VGGSound, VGG-CU, VGG-CM).

    The frame sizes and lengths read from the headers are written back into ``manifest`` (cached for
    the next call). Clips whose video cannot be read are left out and listed in ``<split>_unreadable.csv``.
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    df, root = _read_rows(manifest)
    in_split = df["split"] == split if "split" in df else pd.Series(True, index=df.index)
    failures = add_frame_info(df, root, in_split, max_frames=max_frames)
    _write_csv(manifest, df)

    # as read_manifest gives them: empty cells are missing values (an empty audio_path is no path)
    rows = df[in_split & (df["n_frames"] != "")].replace("", np.nan)
    for col in ("height", "width", "n_frames"):
        rows[col] = rows[col].astype(int)
    rows["duration_s"] = rows["duration_s"].astype(float)
    if "start_s" in rows:
        rows["start_s"] = rows["start_s"].astype(float).fillna(0.0)
    rows.attrs["root"] = str(root)
    paths = write_testsets(rows, out_dir, split=split, seed=seed, a1=a1, a2=a2)
    unreadable = _write_csv(out_dir / f"{split}_unreadable.csv", pd.DataFrame(failures, columns=UNREADABLE_COLUMNS))
    return TestsetReport(paths, unreadable, int(in_split.sum()), len(failures))


# ----------------------------------------------------------------------------------------------
# teacher features

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
            clips[cid] = _Clip(cid, _resolve(root, row["video_path"]), _start(row), int(n) if n else None)
        return clips[cid]

    df, root = _read_rows(manifest)
    for _, row in df.iterrows():
        clip_of(row, root).targets.append((out_dir / f"{row['clip_id']}.npz", None))
    for vm in variation_manifests:
        df, root = _read_rows(vm)
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


def _decode(clip: _Clip, *, fps: float, max_frames: int) -> torch.Tensor:
    needed = [p.n_frames for _, p in clip.targets if p is not None]
    if clip.n_frames is None and len(needed) < len(clip.targets):
        header = probe_video(clip.video)
        clip.n_frames = clip_frames(header.duration_s, clip.start_s, fps=fps, max_frames=max_frames)
    n = max(needed + ([clip.n_frames] if clip.n_frames is not None else []))
    if n < 1:
        raise MediaError(clip.video, f"no {fps:g}-fps frame after {clip.start_s:.3f} s")
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
                     workers: int = 4, progress: bool = True) -> FeatureReport:
    """Write the teacher features of every clip of ``manifest`` and of the varied clips of CU/CM manifests.

    ``encoder`` is a :class:`~cinefoley.encoders.cavp.CAVPVideoEncoder` (on the device it should run
    on). Originals go to ``out_dir/<clip_id>.npz``, varied clips to ``out_dir/<variation>/<clip_id>.npz``;
    both hold ``feat`` (T, 512) float32. The number of frames is the manifest's ``n_frames`` (test
    manifests), else the 4-fps frames in the video, at most ``max_frames``. Files already there are
    not recomputed; clips that cannot be decoded are listed in ``out_dir/unreadable.csv``. Decoding
    runs ``workers`` clips ahead of the encoder.
    """
    started = time.time()
    out_dir = Path(out_dir)
    report = FeatureReport(out_dir)
    clips = _plan(Path(manifest), [Path(v) for v in variation_manifests], out_dir)
    todo = []
    for clip in clips.values():
        missing = [(p, v) for p, v in clip.targets if not p.exists()]
        report.existing += len(clip.targets) - len(missing)
        if missing:
            clip.targets = missing
            todo.append(clip)

    decode = partial(_decode, fps=fps, max_frames=max_frames)
    for clip, video in tqdm(_prefetch(decode, todo, workers), total=len(todo), desc="CAVP features",
                            disable=not progress or not todo):
        try:
            if isinstance(video, Exception):
                raise video
            # clips of one length go through the encoder together
            groups: dict[int, list[tuple[Path, torch.Tensor]]] = {}
            for path, params in clip.targets:
                frames = video[:clip.n_frames] if params is None else apply(video[:params.n_frames], params)
                groups.setdefault(len(frames), []).append((path, frames))
            for items in groups.values():
                feats = encoder.encode(torch.stack([f for _, f in items])).float().cpu().numpy()
                for (path, _), feat in zip(items, feats):
                    atomic_savez(path, feat=feat.astype(np.float32))
                    report.written += 1
        except (MediaError, ValueError) as e:
            reason = e.reason if isinstance(e, MediaError) else str(e)
            report.failed.append({"clip_id": clip.clip_id, "video_path": str(clip.video), "reason": reason})

    _write_csv(report.unreadable, pd.DataFrame(report.failed, columns=UNREADABLE_COLUMNS))
    write_run_record(out_dir, name="features_run.json", started=started,
                     config={"manifest": str(manifest), "variation_manifests": [str(v) for v in variation_manifests],
                             "fps": fps, "max_frames": max_frames},
                     results={"written": report.written, "existing": report.existing, "failed": len(report.failed)})
    return report


# ----------------------------------------------------------------------------------------------
# command line

def register_real(subparsers: argparse._SubParsersAction) -> None:
    """Add ``vggsound testsets`` (under the ``vggsound`` command of :mod:`cinefoley.data.vggsound`) and ``features``.

    Call it after :func:`cinefoley.data.vggsound.register_vggsound`, or instead of it (it then adds that too).
    """
    from cinefoley.data.vggsound import SPLITS, register_vggsound

    vggsound = subparsers.choices.get("vggsound") or register_vggsound(subparsers)
    vggsound_commands = next(a for a in vggsound._actions if isinstance(a, argparse._SubParsersAction))
    t = vggsound_commands.add_parser("testsets", help="write the VGGSound / VGG-CU / VGG-CM test manifests",
                                     description=build_vggsound_testsets.__doc__.splitlines()[0])
    t.add_argument("--manifest", required=True, help="manifest from `cinefoley vggsound manifest` (frame sizes "
                                                     "are cached into it)")
    t.add_argument("--out", required=True, help="folder for <split>_original/_cu/_cm.csv")
    t.add_argument("--split", choices=SPLITS, default="test")
    t.add_argument("--seed", type=int, default=0, help="seed of the per-clip variation hash")
    t.add_argument("--a1", type=float, default=0.4, help="smallest crop ratio")
    t.add_argument("--a2", type=float, default=0.6, help="largest crop ratio")
    t.add_argument("--max-frames", type=int, default=MAX_FRAMES, help="4-fps frames per clip at most")
    t.set_defaults(func=_run_testsets)

    f = subparsers.add_parser("features", help="extract CAVP teacher features once per clip (Diff-Foley's .npz)",
                              description=extract_features.__doc__.splitlines()[0])
    f.add_argument("--manifest", required=True, help="clips to encode as they are (any manifest)")
    f.add_argument("--variation-manifest", nargs="+", default=[], metavar="MANIFEST",
                   help="CU/CM test manifests: their varied clips go to OUT/<variation>/")
    f.add_argument("--cavp", required=True, help="a cavp_epoch66.ckpt-format file")
    f.add_argument("--out", required=True, help="feature folder (<clip_id>.npz, key feat)")
    f.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where CAVP runs (default: cuda when available, else cpu)")
    f.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                   help="4-fps frames per clip at most, for manifests without n_frames")
    f.add_argument("--workers", type=int, default=4, help="videos decoded ahead of the encoder")
    f.add_argument("--cavp-stage-blocks", type=int, nargs=4, default=(3, 4, 6, 3), metavar="N",
                   help="SlowOnly blocks per stage (3 4 6 3 = the released R50)")
    f.add_argument("--cavp-base-channels", type=int, default=64, help="SlowOnly stem width (64 = released)")
    f.set_defaults(func=_run_features)


def _run_testsets(args: argparse.Namespace) -> int:
    print(build_vggsound_testsets(args.manifest, args.out, split=args.split, seed=args.seed, a1=args.a1,
                                  a2=args.a2, max_frames=args.max_frames))
    return 0


def _run_features(args: argparse.Namespace) -> int:
    from cinefoley.encoders.cavp import load_cavp

    encoder = load_cavp(args.cavp, allow_audio_branch=True, stage_blocks=tuple(args.cavp_stage_blocks),
                        base_channels=args.cavp_base_channels).to(args.device)
    print(extract_features(args.manifest, encoder, args.out, variation_manifests=args.variation_manifest,
                           max_frames=args.max_frames, workers=args.workers))
    return 0
