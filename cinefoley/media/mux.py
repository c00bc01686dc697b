"""A new soundtrack under a video's own pictures: an mp4 whose video stream is copied when it can be.

Copying the coded pictures (no decoding, no re-encoding) keeps them bit for bit, with their frame rate
(a variable one too), size and colours; only the sound is new (AAC, mono). A copy is made when the sound
is for the whole video and mp4 can hold the source's codec (H.264, HEVC, MPEG-4 part 2, AV1, VP9, ...).
Otherwise (a span of a longer video, or a codec mp4 refuses) the frames of the span are re-encoded as H.264
at their own size and with their own timestamps: 4:2:0, or 4:4:4 where an odd width or height rules 4:2:0
out (H.264 4:2:0 needs even sizes), so that no picture is cropped or scaled.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cinefoley.errors import MediaError

AUDIO_CODEC = "aac"
#: timestamps of re-encoded frames (the MPEG clock: exact for every common frame rate)
TIME_BASE = Fraction(1, 90000)
#: a frame starting this close to the span's start counts as on screen at the start (load_video's slack)
SLACK_S = 1e-3


def encode_audio(out, stream, samples: np.ndarray, sample_rate: int) -> None:
    """Encode mono float samples in one go (the encoder cuts them into AAC frames itself).

    The frame has a timestamp, so the encoder marks its priming samples and players drop them: without one
    the sound would start 64 ms late.
    """
    frame = av.AudioFrame.from_ndarray(np.clip(samples, -1, 1).reshape(1, -1).astype(np.float32),
                                       format="flt", layout="mono")
    frame.sample_rate, frame.pts = sample_rate, 0
    out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def mux_sound(video: str | Path, dst: str | Path, audio: np.ndarray, *, start: float = 0.0, end: float | None = None,
              sample_rate: int = 16000) -> str:
    """Write ``dst`` (mp4): the pictures of ``video`` from ``start`` to ``end`` seconds (None: its end) with
    ``audio`` (mono float, ``sample_rate`` Hz) as its only sound. Returns ``"copied"`` or ``"re-encoded"``.

    Written to a temporary name and renamed, so a killed run never leaves half a file. A source that cannot
    be read is a :class:`MediaError` naming it.
    """
    video, dst = Path(video), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial.mp4")
    try:
        how = None
        if start <= SLACK_S and end is None:
            try:
                _copy(video, tmp, audio, sample_rate)
                how = "copied"
            except (av.FFmpegError, ValueError):  # a codec mp4 cannot hold, or packets the muxer refuses
                tmp.unlink(missing_ok=True)
        if how is None:
            _reencode(video, tmp, audio, start, end, sample_rate)
            how = "re-encoded"
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return how


def _open(path: Path):
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(path, f"not a readable media file ({e})") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise MediaError(path, "has no video stream")
    return container.streams.video[0]


def _output(path: Path):
    # faststart: the index before the data, so a browser starts playing before the whole file has arrived
    return av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})


def _copy(video: Path, tmp: Path, audio: np.ndarray, sample_rate: int) -> None:
    with _open(video) as inp, _output(tmp) as out:
        source = _video_stream(inp, video)
        vout = out.add_stream_from_template(source)
        aout = out.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
        n = 0
        for packet in inp.demux(source):
            if packet.size == 0:  # the demuxer's empty packet at the end
                continue
            packet.stream = vout
            out.mux(packet)
            n += 1
        if n == 0:
            raise ValueError("no video packet")
        encode_audio(out, aout, audio, sample_rate)


def frames_in_span(frames, start: float, end: float | None):
    """(frame, seconds after ``start``) of every decoded frame on screen between ``start`` and ``end``: the
    frame showing at ``start`` (at 0) and those that begin before ``end``."""
    held = None
    for frame in frames:
        t = frame.time
        if t is None:
            continue
        if t <= start + SLACK_S:
            held = frame
            continue
        if held is not None:
            yield held, 0.0
            held = None
        if end is not None and t >= end - SLACK_S:
            return
        yield frame, t - start
    if held is not None:
        yield held, 0.0


def _reencode(video: Path, tmp: Path, audio: np.ndarray, start: float, end: float | None, sample_rate: int) -> None:
    with _open(video) as inp, _output(tmp) as out:
        source = _video_stream(inp, video)
        width, height = source.codec_context.width, source.codec_context.height
        vout = out.add_stream("libx264", rate=source.average_rate or source.guessed_rate or Fraction(25))
        vout.width, vout.height = width, height
        vout.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        vout.codec_context.time_base = TIME_BASE
        vout.options = {"crf": "18", "preset": "veryfast"}
        aout = out.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
        n = 0
        try:
            for frame, t in frames_in_span(inp.decode(source), start, end):
                picture = frame.reformat(format=vout.pix_fmt)
                picture.pts, picture.time_base = round(t / TIME_BASE), TIME_BASE
                out.mux(vout.encode(picture))
                n += 1
        except av.FFmpegError as e:
            raise MediaError(video, f"cannot decode its video ({e})") from None
        if n == 0:
            raise MediaError(video, f"no picture between {start:.3f} s and {end if end is not None else 'the end'}")
        out.mux(vout.encode(None))
        encode_audio(out, aout, audio, sample_rate)
