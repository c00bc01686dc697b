"""The two files of a study pair must show the same pictures: one video, two soundtracks.

A pairs CSV is written by hand or by a script, and a slip (a row that pairs a gunshot clip with an unrelated
clip) would make a trial where participants compare two different videos, and the study would count their
votes as a preference between the systems. :func:`check_pairs` compares, for every row, the two files'
durations (within one frame of the slower), frame sizes, and their pictures at :data:`FRAMES` instants
spread over the clip (downscaled to :data:`SIZE` px, so that two encodings of one video agree and two
different shots do not), and refuses the CSV naming every row that differs and how.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av

from cinefoley.errors import MediaError
from cinefoley.media.video import load_video, video_duration

FRAMES = 8
SIZE = 32
#: largest mean absolute difference (of 255) of two downscaled pictures of one video: re-encodings of one
#: video differ by about 1-3, different shots by tens
MAX_PICTURE_DIFF = 12.0


def _shape(path: Path) -> tuple[int, int, float]:
    """(width, height, seconds per frame) of the first video stream."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(path, "has no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or 25
            return s.codec_context.width, s.codec_context.height, 1 / float(rate)
    except av.FFmpegError as e:
        raise MediaError(path, f"not a readable media file ({e})") from None


def picture_differences(a: str | Path, b: str | Path, *, frames: int = FRAMES) -> list[str]:
    """How the pictures of ``a`` and ``b`` differ (empty when they show the same video)."""
    a, b = Path(a), Path(b)
    (wa, ha, pa), (wb, hb, pb) = _shape(a), _shape(b)
    da, db = video_duration(a), video_duration(b)
    problems = []
    if abs(da - db) > max(pa, pb) + 1e-3:
        problems.append(f"{a.name} lasts {da:.2f} s, {b.name} {db:.2f} s (more than one frame apart)")
    if (wa, ha) != (wb, hb):
        problems.append(f"{a.name} is {wa}x{ha} px, {b.name} {wb}x{hb} px")
    span = min(da, db)
    # the middle of each of ``frames`` equal parts of the shorter clip
    look = {p: load_video(p, fps=frames / span, n_frames=frames, start=span / (2 * frames), size=SIZE).float()
            for p in (a, b)}
    diff = (look[a] - look[b]).abs().mean(dim=(1, 2, 3))
    worst = int(diff.argmax())
    if diff[worst] > MAX_PICTURE_DIFF:
        at = span * (worst + 0.5) / frames
        problems.append(f"the pictures differ (at {at:.2f} s by {float(diff[worst]):.0f} of 255 on average; "
                        f"one video encoded twice differs by less than {MAX_PICTURE_DIFF:.0f})")
    return problems


def check_pairs(pairs: Sequence, csv_path: str | Path) -> None:
    """Refuse ``pairs`` (:class:`~cinefoley.study.design.Pair`, read from ``csv_path``) if the two files of any
    row do not show the same pictures, naming every such row (its CSV line and clip id) and what differs."""
    bad = []
    for line, pair in enumerate(pairs, start=2):  # line 1 is the header
        problems = picture_differences(pair.baseline, pair.ours)
        if problems:
            bad.append(f"  {csv_path}:{line} (clip {pair.clip_id!r}): " + "; ".join(problems))
    if bad:
        raise ValueError(f"{csv_path}: the two files of a pair must show the same pictures (one video, two "
                         f"soundtracks); {len(bad)} row(s) do not:\n" + "\n".join(bad))
