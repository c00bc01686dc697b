"""VGGSound manifests from the dataset's own split lists and the videos a user actually has.

Two list formats are read (both without a header; labels with commas are quoted, so a CSV reader is used):

- the official ``vggsound.csv``: ``YouTube ID, start seconds, label, train/test split``, e.g.
  ``---g-f_I2yQ,1,people marching,test``;
- the per-split lists (``test.csv``): ``<YouTube ID>_<start:06d>.mp4,<label>``, e.g.
  ``0_8-g2rof7E_000049.mp4,"heart sounds, heartbeat"``. A YouTube ID may contain ``_`` and ``-``; the
  start is the last ``_``-separated field.

A clip's id is ``<YouTube ID>_<start:06d>`` (the item names of Diff-Foley's and Frieren's split files).
Videos are looked up recursively under a folder by file stem: ``<clip id>.<ext>`` (or with an unpadded
start) is a 10-s clip already cut at the start (``start_s`` 0), ``<YouTube ID>.<ext>`` a full-length
download (``start_s`` = the VGGSound start). Clips without a video are listed in ``<out>_missing.csv``.

Manifest columns (the package's manifest convention, see :mod:`cinefoley.media.clips`): ``clip_id, split,
video_path, audio_path, label, start_s, youtube_id, youtube_start_s``. ``video_path`` is relative to the
manifest's folder when the video lies inside it, otherwise absolute, so ``manifest_dir / video_path``
resolves both. ``audio_path`` is empty: the sound is read from the video. ``start_s`` is the offset
*inside the file*.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cinefoley.errors import MediaError
from cinefoley.utils import atomic_write_bytes, atomic_write_text

SPLITS = ("train", "test")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
MANIFEST_COLUMNS = ("clip_id", "split", "video_path", "audio_path", "label", "start_s", "youtube_id",
                    "youtube_start_s")
_CLIP_NAME = re.compile(r"(?P<ytid>.+)_(?P<start>\d+)")


@dataclass(frozen=True)
class VGGSoundClip:
    """One row of a VGGSound list."""

    youtube_id: str
    start_s: int
    label: str
    split: str

    @property
    def clip_id(self) -> str:
        return clip_id(self.youtube_id, self.start_s)


def clip_id(youtube_id: str, start_s: int) -> str:
    """``<YouTube ID>_<start:06d>``, VGGSound's clip name."""
    return f"{youtube_id}_{int(start_s):06d}"


def parse_clip_name(name: str) -> tuple[str, int] | None:
    """(YouTube ID, start) of ``<id>_<start>[.ext]``; None when the last ``_`` field is not a number."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name
    m = _CLIP_NAME.fullmatch(stem)
    return (m["ytid"], int(m["start"])) if m else None


def read_vggsound_csv(path: str | Path, *, split: str | None = None, fmt: str = "auto") -> list[VGGSoundClip]:
    """The clips of an official ``vggsound.csv`` (``fmt="official"``) or a split list (``fmt="list"``).

    ``fmt="auto"`` decides from the first row (4 fields: official, 2: list). A list has no split column:
    ``split`` gives it, or the file name when it is ``train.csv``/``test.csv``. For the official file,
    ``split`` keeps only that split. A malformed row raises :class:`~cinefoley.errors.MediaError` with
    its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    if fmt not in ("auto", "official", "list"):
        raise ValueError(f"fmt must be 'auto', 'official' or 'list', got {fmt!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), start=1) if any(row)]
    if not rows:
        raise MediaError(path, "no rows")
    if fmt == "auto":
        fmt = {4: "official", 2: "list"}.get(len(rows[0][1]), "")
        if not fmt:
            raise MediaError(path, f"line {rows[0][0]}: expected 4 fields (YouTube ID, start seconds, label, split) "
                                   f"or 2 (<id>_<start>.mp4, label), got {len(rows[0][1])}")
    list_split = split
    if fmt == "list" and split is None:
        list_split = path.stem if path.stem in SPLITS else None
        if list_split is None:
            raise MediaError(path, "a split list has no split column; name the split (train/test)")
    clips = [_parse_row(path, n, row, fmt, list_split) for n, row in rows]
    return [c for c in clips if split is None or c.split == split]


def _parse_row(path: Path, line: int, row: list[str], fmt: str, list_split: str | None) -> VGGSoundClip:
    def fail(reason: str) -> MediaError:
        return MediaError(path, f"line {line}: {reason}: {','.join(row)!r}")

    if fmt == "official":
        if len(row) != 4:
            raise fail(f"expected 4 fields (YouTube ID, start seconds, label, split), got {len(row)}")
        ytid, start, label, split = row
        if not re.fullmatch(r"\d+", start):
            raise fail(f"start seconds {start!r} is not a whole number")
        if split not in SPLITS:
            raise fail(f"split {split!r} is not one of {SPLITS}")
        start_s = int(start)
    else:
        if len(row) != 2:
            raise fail(f"expected 2 fields (<id>_<start>.mp4, label), got {len(row)}")
        parsed = parse_clip_name(row[0])
        if parsed is None:
            raise fail(f"{row[0]!r} is not <YouTube ID>_<start seconds>.mp4")
        (ytid, start_s), label, split = parsed, row[1], list_split
    if not ytid or not label:
        raise fail("empty YouTube ID or label")
    return VGGSoundClip(ytid, start_s, label, split)


def find_videos(video_dir: str | Path) -> dict[str, Path]:
    """``{stem: path}`` of the video files under ``video_dir`` (recursive; clip names normalised to 6 digits)."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise MediaError(video_dir, "video folder not found")
    found: dict[str, Path] = {}
    for p in sorted(video_dir.rglob("*")):
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            parsed = parse_clip_name(p.name)
            found.setdefault(p.stem, p)
            if parsed is not None:
                found.setdefault(clip_id(*parsed), p)
    return found


@dataclass
class ManifestReport:
    """What :func:`build_manifest` wrote and found."""

    manifest: Path
    missing_list: Path
    rows: int
    found: int
    missing: int
    full_length: int
    duplicates: int

    def __str__(self) -> str:
        return (f"{self.rows} clips: {self.found} videos found ({self.full_length} full-length), "
                f"{self.missing} missing (listed in {self.missing_list})"
                + (f", {self.duplicates} duplicate rows dropped" if self.duplicates else "")
                + f"; manifest {self.manifest}")


def build_manifest(csv_path: str | Path, video_dir: str | Path, out: str | Path, *, split: str | None = None,
                   fmt: str = "auto") -> ManifestReport:
    """Write a manifest of the clips of ``csv_path`` whose videos are under ``video_dir``.

    Clips without a video are not an error: they go to ``<out stem>_missing.csv`` (clip_id, youtube_id,
    youtube_start_s, label, split) and are counted in the report. Repeated clip ids keep their first row.
    """
    out = Path(out)
    clips = read_vggsound_csv(csv_path, split=split, fmt=fmt)
    videos = find_videos(video_dir)
    root = out.parent.resolve()
    seen: set[str] = set()
    rows, missing, full_length = [], [], 0
    for c in clips:
        if c.clip_id in seen:
            continue
        seen.add(c.clip_id)
        path, start = videos.get(c.clip_id), 0
        if path is None and c.youtube_id in videos:
            path, start = videos[c.youtube_id], c.start_s
            full_length += 1
        if path is None:
            missing.append([c.clip_id, c.youtube_id, c.start_s, c.label, c.split])
            continue
        path = path.resolve()
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        rows.append([c.clip_id, c.split, rel.as_posix(), "", c.label, float(start), c.youtube_id, c.start_s])
    missing_path = out.with_name(f"{out.stem}_missing.csv")
    atomic_write_text(out, _csv_text(MANIFEST_COLUMNS, rows))
    atomic_write_text(missing_path, _csv_text(("clip_id", "youtube_id", "youtube_start_s", "label", "split"), missing))
    return ManifestReport(out, missing_path, len(seen), len(rows), len(missing), full_length, len(clips) - len(seen))


def _csv_text(header: tuple[str, ...], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# reading a manifest back (every column as text, so ids are written back exactly as read)

#: 4-fps frames, Diff-Foley's rate; a 10-s clip gives its stored feature length of 40 (the LDM window is 32).
FPS = 4.0
MAX_FRAMES = 40
UNREADABLE_COLUMNS = ("clip_id", "video_path", "reason")


def resolve_path(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def start_of(row) -> float:
    value = row.get("start_s", "")  # manifests are read as text here
    return float(value) if value else 0.0


def read_rows(path: Path) -> tuple[pd.DataFrame, Path]:
    """A manifest with every column as text (ids are written back exactly as read), and its folder."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"clip_id", "video_path"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    return df, path.parent.resolve()


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write_bytes(path, df.to_csv(index=False).encode())
