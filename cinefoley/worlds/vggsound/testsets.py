"""VGG-CU and VGG-CM: the paper's test sets placed on the VGGSound videos you have.

``cinefoley vggsound testsets`` turns a VGGSound manifest (:mod:`cinefoley.worlds.vggsound.manifest`) into
the three test manifests by the deterministic recipe of :mod:`cinefoley.testsets`. Windows are placed on
each clip's own frame size, so the size and length of every test video are read once from its header
(PyAV, no decoding) and cached in the manifest's ``height``, ``width``, ``duration_s`` and ``n_frames``
columns. ``n_frames`` is the number of 4-fps frames from ``start_s``, at most 40: a 10-s VGGSound clip
gives Diff-Foley's (40, 512) feature layout, of which the LDM and Align Acc use the first 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cinefoley.progress import progress_bar
from cinefoley.errors import MediaError
from cinefoley.testsets import VGGSOUND_RECIPES, read_recipes, recipes_table, write_testsets
from cinefoley.worlds.vggsound.manifest import (FPS, MAX_FRAMES, UNREADABLE_COLUMNS, read_rows, read_vggsound_csv,
                                                resolve_path, start_of, write_csv)

FRAME_COLUMNS = ("height", "width", "duration_s", "n_frames")


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
    """4-fps frames from ``start_s`` that :func:`cinefoley.media.video.load_video` can read, at most ``max_frames``."""
    return max(0, min(max_frames, math.floor((duration_s - start_s) * fps + 1e-6)))


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
    for i in progress_bar(todo, desc="video headers", disable=len(todo) < 2):
        row = df.loc[i]
        try:
            if row["height"] == "" or row["width"] == "" or row["duration_s"] == "":
                header = probe_video(resolve_path(root, row["video_path"]))
                df.loc[i, ["height", "width", "duration_s"]] = [str(header.height), str(header.width),
                                                                f"{header.duration_s:.6f}"]
            n = clip_frames(float(df.loc[i, "duration_s"]), start_of(row), fps=fps, max_frames=max_frames)
            if n < 1:
                raise MediaError(resolve_path(root, row["video_path"]), f"no {fps:g}-fps frame after "
                                 f"{start_of(row):.3f} s (video is {float(df.loc[i, 'duration_s']):.3f} s)")
            df.loc[i, "n_frames"] = str(n)
        except MediaError as e:
            df.loc[i, "n_frames"] = ""
            failures.append({"clip_id": row["clip_id"], "video_path": row["video_path"], "reason": e.reason})
    return failures


def vggsound_recipes(test_list: str | Path) -> pd.DataFrame:
    """The VGG-CU / VGG-CM recipes (seed 0, a1 = 0.4, a2 = 0.6) of every clip of VGGSound's official test list
    (``test.csv``: ``<id>_<start>.mp4,<label>``), in its order, with its label."""
    clips = read_vggsound_csv(test_list, split="test")
    table = recipes_table([c.clip_id for c in clips])
    table.insert(1, "label", [c.label for c in clips])
    return table


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
    With the paper's recipe (seed 0, a1 = 0.4, a2 = 0.6) the clips of the official test list take their
    windows from the shipped recipes (:data:`~cinefoley.testsets.VGGSOUND_RECIPES`).
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    df, root = read_rows(manifest)
    in_split = df["split"] == split if "split" in df else pd.Series(True, index=df.index)
    failures = add_frame_info(df, root, in_split, max_frames=max_frames)
    write_csv(manifest, df)

    # as read_manifest gives them: empty cells are missing values (an empty audio_path is no path)
    rows = df[in_split & (df["n_frames"] != "")].replace("", np.nan)
    for col in ("height", "width", "n_frames"):
        rows[col] = rows[col].astype(int)
    rows["duration_s"] = rows["duration_s"].astype(float)
    if "start_s" in rows:
        rows["start_s"] = rows["start_s"].astype(float).fillna(0.0)
    rows.attrs["root"] = str(root)
    shipped = read_recipes(VGGSOUND_RECIPES) if (seed, a1, a2) == (0, 0.4, 0.6) else None
    paths = write_testsets(rows, out_dir, split=split, seed=seed, a1=a1, a2=a2, recipes=shipped)
    unreadable = write_csv(out_dir / f"{split}_unreadable.csv", pd.DataFrame(failures, columns=UNREADABLE_COLUMNS))
    return TestsetReport(paths, unreadable, int(in_split.sum()), len(failures))
