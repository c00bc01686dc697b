"""Study stimuli: mp4 files (H.264 video + AAC audio) that every browser plays and that reveal nothing.

Every stimulus of a study is re-encoded once, at creation, with the same settings. This does three
things: browsers can play it whatever codec the generator wrote (Chromium plays H.264/AAC, not
MPEG-4 part 2), no container metadata, file name or encoder fingerprint survives that could tell the
two systems apart, and a catch trial can put one clip's pictures under another clip's sound.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import chain
from pathlib import Path

import av
import numpy as np

from cinefoley.errors import MediaError
from cinefoley.media.mux import AUDIO_CODEC, encode_audio

VIDEO_CODEC = "libx264"


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray,
              sample_rate: int = 16000) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 and mono float ``audio`` as an H.264 + AAC mp4."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    with av.open(str(path), "w", format="mp4") as out:
        vout = _video_stream(out, Fraction(fps).limit_denominator(1000), frames.shape[2], frames.shape[1])
        aout = out.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            out.mux(vout.encode(frame.reformat(width=vout.width, height=vout.height, format="yuv420p")))
        out.mux(vout.encode(None))
        encode_audio(out, aout, np.asarray(audio, dtype=np.float32), sample_rate)
    return path


def transcode(video_src: str | Path, dst: str | Path, audio_src: str | Path | None = None,
              sample_rate: int = 16000) -> Path:
    """Re-encode the pictures of ``video_src`` with the sound of ``audio_src`` (default: its own).

    The sound is cut to the length of the pictures. Raises :class:`MediaError` naming the file when
    it cannot be decoded or lacks the stream it must give.
    """
    video_src, dst = Path(video_src), Path(dst)
    audio_src = video_src if audio_src is None else Path(audio_src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial.mp4")
    try:
        with _open(video_src) as vin, _open(audio_src) as ain, av.open(str(tmp), "w", format="mp4") as out:
            vstream = _first(vin, "video", video_src)
            astream = _first(ain, "audio", audio_src)
            rate = vstream.average_rate or vstream.guessed_rate or Fraction(25)
            vout = _video_stream(out, Fraction(rate), vstream.codec_context.width, vstream.codec_context.height)
            aout = out.add_stream(AUDIO_CODEC, rate=sample_rate, layout="mono")
            n = 0
            for frame in _decode(vin, vstream, video_src):
                frame = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                frame.pts, frame.time_base = n, 1 / Fraction(rate)
                n += 1
                out.mux(vout.encode(frame))
            if n == 0:
                raise MediaError(video_src, "no video frame could be decoded")
            out.mux(vout.encode(None))
            max_samples = int(round(n / float(rate) * sample_rate))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            chunks, total = [np.zeros(0, np.float32)], 0
            for frame in chain(_decode(ain, astream, audio_src), [None]):  # None flushes the resampler
                new = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
                chunks.extend(new)
                total += sum(map(len, new))
                if total >= max_samples:  # no need to decode sound past the last picture
                    break
            samples = np.concatenate(chunks)[:max_samples]
            if samples.size == 0:
                raise MediaError(audio_src, "no audio sample could be decoded")
            encode_audio(out, aout, samples, sample_rate)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def probe(path: str | Path) -> dict:
    """Duration (s), size and sample rate of an mp4; :class:`MediaError` if a stream is missing."""
    path = Path(path)
    with _open(path) as c:
        v, a = _first(c, "video", path), _first(c, "audio", path)
        duration = float(c.duration / av.time_base) if c.duration else float(v.duration * v.time_base)
        return {"duration": duration, "width": v.codec_context.width, "height": v.codec_context.height,
                "fps": float(v.average_rate or 0), "sample_rate": a.codec_context.sample_rate}


def _video_stream(out, rate: Fraction, width: int, height: int):
    stream = out.add_stream(VIDEO_CODEC, rate=rate)
    stream.width, stream.height = width - width % 2, height - height % 2  # yuv420p needs even sizes
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "20", "preset": "veryfast"}
    return stream


def _open(path: Path):
    if not path.is_file():
        raise MediaError(path, "file not found")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(path, f"not a readable media file ({e})") from e


def _first(container, kind: str, path: Path):
    streams = getattr(container.streams, kind)
    if not streams:
        raise MediaError(path, f"has no {kind} stream")
    return streams[0]


def _decode(container, stream, path: Path):
    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise MediaError(path, f"cannot decode {stream.type} ({e})") from e
