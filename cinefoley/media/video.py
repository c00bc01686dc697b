"""Reading and writing clips: decord frames at 4 fps, squash-resized like Diff-Foley's front end.

Diff-Foley re-encodes each clip to 4 fps with ffmpeg and squash-resizes the frames to 224×224
(aspect ratio not kept, no crop), range [0, 1]. We read the original file with decord and pick,
for each sampling instant t_k = start + k / fps, the frame on screen at t_k (the last frame whose
presentation time is ≤ t_k), using the file's own timestamps instead of assuming its frame rate.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cinefoley.errors import MediaError

DEFAULT_FPS = 4.0
#: what a folder of videos is searched for (a file named on its own is tried whatever its suffix)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp")


def _open_reader(path: Path):
    import decord

    if not path.exists():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:  # decord's messages are long C++ traces; keep the gist
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MediaError(path, f"no decodable video stream (truncated or not a video?): {first[:200]}") from None


def video_duration(path: str | Path) -> float:
    """Seconds from 0 to the end of the last frame, by the file's own timestamps (the span :func:`load_video`
    reads from); a :class:`MediaError` naming the file when it has no decodable video."""
    path = Path(path)
    vr = _open_reader(path)
    if len(vr) == 0:
        raise MediaError(path, "video stream has no frames")
    return float(vr.get_frame_timestamp([len(vr) - 1])[0, 1])


def sample_indices(timestamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each time, the index of the frame on screen then (last start time ≤ t, 1 ms slack)."""
    idx = np.searchsorted(timestamps, times + 1e-3, side="right") - 1
    return np.clip(idx, 0, len(timestamps) - 1)


def load_video(path: str | Path, *, fps: float = DEFAULT_FPS, n_frames: int | None = None,
               start: float = 0.0, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Frames of ``path`` sampled at ``fps`` from ``start`` seconds, as uint8 ``(T, 3, H, W)``.

    ``n_frames`` frames are returned (all that fit when None); a clip too short for them is a
    :class:`MediaError`. ``size`` squash-resizes to (H, W) (an int means square). Grayscale,
    odd-sized and portrait videos are valid input: frames come back as RGB at the asked size.
    """
    path = Path(path)
    vr = _open_reader(path)
    n_decodable = len(vr)
    if n_decodable == 0:
        raise MediaError(path, "video stream has no frames")
    try:
        stamps = vr.get_frame_timestamp(np.arange(n_decodable))[:, 0]
    except Exception as e:
        raise MediaError(path, f"cannot read frame timestamps: {e}") from None
    end = float(vr.get_frame_timestamp([n_decodable - 1])[0, 1])  # end of the last frame
    if n_frames is None:
        n_frames = int(np.floor((end - start) * fps + 1e-6))
        if n_frames < 1:
            raise MediaError(path, f"video is {end:.3f} s long, nothing to read from {start:.3f} s")
    times = start + np.arange(n_frames) / fps
    if times[-1] >= end - 1e-6:
        raise MediaError(path, f"video is {end:.3f} s long; {n_frames} frames at {fps:g} fps from "
                               f"{start:.3f} s need more than {times[-1]:.3f} s")
    idx = sample_indices(stamps, times)
    try:
        frames = vr.get_batch(idx.tolist()).asnumpy()
    except Exception as e:
        frames = _decode_with_pyav(path, idx, f"decoding failed (truncated file?): {str(e).splitlines()[0][:200]}")
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)
    if size is not None:
        video = resize(video, size)
    return video


def _decode_with_pyav(path: Path, indices: np.ndarray, reason: str) -> np.ndarray:
    """Frames ``indices`` (presentation order, as decord counts them) decoded by PyAV as RGB.

    decord 0.6 fails to copy out frames of a few small widths (of the even widths up to 400 px:
    2-8, 12, 16, 24, 48 and 72, e.g. a 48×96 portrait clip) although it decodes them; on the
    widths decord handles, PyAV gives the same pixels.
    """
    import av

    wanted, got = set(indices.tolist()), {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if len(got) == len(wanted):
                    break
    except av.error.FFmpegError:
        pass
    if len(got) < len(wanted):
        raise MediaError(path, reason)
    return np.stack([got[i] for i in indices.tolist()])


def resize(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Squash-resize (T, C, H, W) frames to ``size`` (aspect ratio not kept), keeping the dtype."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(video.shape[-2:]) == hw:
        return video
    x = video.float() if not video.is_floating_point() else video
    out = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8) if video.dtype == torch.uint8 else out.to(video.dtype)


def write_video(path: str | Path, frames: np.ndarray, fps: float, *, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18) -> Path:
    """Write uint8 frames (T, H, W, 3) as H.264 mp4 (yuv420p), with an optional AAC mono track.

    Written to a temporary name and renamed, so a killed run never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    rate = Fraction(fps).limit_denominator(1000)
    try:
        _encode(tmp, frames, rate, audio, sample_rate, crf)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def _encode(tmp: Path, frames: np.ndarray, rate: Fraction, audio: np.ndarray | None, sample_rate: int,
            crf: int) -> None:
    import av

    with av.open(str(tmp), mode="w") as container:
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        if audio is not None:
            aus = container.add_stream("aac", rate=sample_rate)
            aus.layout = "mono"
        for frame in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if audio is not None:
            samples = np.ascontiguousarray(audio, dtype=np.float32)[None]
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            af.sample_rate = sample_rate
            # with a timestamp the encoder marks its 1024 priming samples, so players and
            # decoders drop them; without one the sound starts 64 ms late
            af.pts, af.time_base = 0, Fraction(1, sample_rate)
            for packet in aus.encode(af):
                container.mux(packet)
            for packet in aus.encode():
                container.mux(packet)
