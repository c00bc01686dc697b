"""Real encoded videos of the kinds people bring (a test helper): any frame rate, variable frame rate, portrait,
odd sizes, grayscale, with or without a sound track, MPEG-4 or H.264, mp4 or mkv.

Frame k shows k in binary as 8 vertical black/white stripes over a coloured background (:func:`frame_index`
reads it back, through compression), so a test can tell which source frame a decoded picture is.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 8


def coded_frame(k: int, height: int, width: int, gray: bool = False) -> np.ndarray:
    """(H, W, 3) uint8, or (H, W) when ``gray``: frame k's stripes in the top half, a colour that drifts with k
    below."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[height // 2:] = ((37 * k) % 200 + 30, (91 * k) % 200 + 30, (53 * k) % 200 + 30)
    stripe = width // BITS
    for b in range(BITS):
        if k >> b & 1:
            frame[: height // 2, b * stripe:(b + 1) * stripe] = 255
    return frame[..., 0] if gray else frame


def frame_index(frame: np.ndarray) -> int:
    """The k a decoded (H, W, 3) or (3, H, W) frame shows."""
    rgb = np.asarray(frame)
    if rgb.shape[0] == 3 and rgb.shape[-1] != 3:
        rgb = rgb.transpose(1, 2, 0)
    top = rgb[: rgb.shape[0] // 2].astype(float).mean(axis=(0, 2))
    stripe = len(top) // BITS
    return sum(1 << b for b in range(BITS) if top[b * stripe + 1:(b + 1) * stripe - 1].mean() > 128)


def frame_times(fps: float, seconds: float, vfr: bool = False) -> np.ndarray:
    """Start times of the frames: every 1/fps, or (``vfr``) alternately 0.5/fps and 1.5/fps apart."""
    if not vfr:
        return np.arange(int(round(seconds * fps))) / fps
    steps = np.resize([0.5 / fps, 1.5 / fps], int(round(seconds * fps)))
    return np.concatenate([[0.0], np.cumsum(steps)[:-1]])


def write_clip(path: str | Path, *, fps: float = 12, seconds: float = 3.0, size: tuple[int, int] = (48, 64),
               codec: str = "libx264", pix_fmt: str = "yuv420p", gray: bool = False, audio: bool = True,
               vfr: bool = False, tone_hz: float = 440.0, first: int = 0) -> Path:
    """Write a clip of ``seconds`` at ``fps`` (H, W = ``size``) and, with ``audio``, a 16-kHz AAC tone track.
    Frame k shows ``first + k`` (another ``first``: other pictures)."""
    path = Path(path)
    height, width = size
    times = frame_times(fps, seconds, vfr)
    time_base = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        sound = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for k, t in enumerate(times):
            picture = coded_frame(first + k, height, width, gray)
            frame = av.VideoFrame.from_ndarray(picture, format="gray" if gray else "rgb24").reformat(format=pix_fmt)
            frame.pts, frame.time_base = round(t / time_base), time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            t = np.arange(int(seconds * 16000)) / 16000
            wav = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(wav, format="flt", layout="mono")
            af.sample_rate, af.pts = 16000, 0
            out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return path


def decoded_frames(path: str | Path) -> tuple[list[int], np.ndarray, tuple[int, int]]:
    """(frame index shown by every decoded frame, their start times in s, (H, W)) of a video file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    rgb = [f.to_ndarray(format="rgb24") for f in frames]
    return [frame_index(f) for f in rgb], np.array([f.time for f in frames]), rgb[0].shape[:2]


def broken_copy(good: str | Path, path: str | Path) -> Path:
    """The first third of ``good``'s bytes: a truncated file that loaders must refuse."""
    data = Path(good).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])
    return Path(path)
