"""Video loading at 4 fps by timestamps, squash-resizing, bad files, and atomic mp4 writing."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from cinefoley.media.audio import load_audio
from cinefoley.errors import MediaError
from cinefoley.media.video import load_video, resize, sample_indices, write_video

BITS = 8  # frame k shows k in binary as 8 black/white vertical stripes (survives compression)


def _coded_frames(n: int, h: int = 32, w: int = 64) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    stripe = w // BITS
    for k in range(n):
        for b in range(BITS):
            if k >> b & 1:
                frames[k, :, b * stripe:(b + 1) * stripe] = 255
    return frames


def _decode_index(frame) -> int:
    """The k a (3, H, W) frame shows."""
    grey = frame.float().mean(dim=(0, 1))  # per column
    stripe = grey.shape[0] // BITS
    return sum(1 << b for b in range(BITS) if grey[b * stripe + 2:(b + 1) * stripe - 2].mean() > 128)


def _encode(path, codec: str, pix_fmt: str, frames: np.ndarray, fps: int = 12, fmt: str = "rgb24"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip12(tmp_path_factory):
    """2.5 s at 12 fps, frame k coded with k."""
    return write_video(tmp_path_factory.mktemp("video") / "clip12.mp4", _coded_frames(30), 12)


# ---------------------------------------------------------------------------------------------
# sampling at 4 fps

def test_sample_indices_pick_the_frame_on_screen():
    stamps = np.array([0.0, 0.1, 0.2])
    times = np.array([0.0, 0.05, 0.0995, 0.1, 0.15, 0.25, 9.0])
    assert sample_indices(stamps, times).tolist() == [0, 0, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("fps, n_written", [(12, 30), (25, 62), (10, 25)])
def test_load_video_samples_4fps_by_timestamps(tmp_path, fps, n_written):
    path = write_video(tmp_path / f"clip{fps}.mp4", _coded_frames(n_written), fps)
    video = load_video(path)
    assert video.dtype == torch.uint8 and video.shape[1:] == (3, 32, 64)
    assert len(video) == math.floor(n_written / fps * 4 + 1e-6)
    expected = [math.floor(k / 4 * fps + 1e-6) for k in range(len(video))]
    assert [_decode_index(f) for f in video] == expected


def test_load_video_from_a_start_time(clip12):
    video = load_video(clip12, n_frames=4, start=0.5)
    assert [_decode_index(f) for f in video] == [6, 9, 12, 15]


def test_load_video_squash_resizes_to_the_asked_size(tmp_path):
    frames = np.zeros((12, 40, 80, 3), np.uint8)
    frames[:, :, :40] = (220, 30, 30)  # left half red, right half blue
    frames[:, :, 40:] = (30, 30, 220)
    path = write_video(tmp_path / "wide.mp4", frames, 12)
    video = load_video(path, size=(24, 50))
    assert video.shape == (4, 3, 24, 50) and video.dtype == torch.uint8
    left, right = video[:, :, :, :20].float().mean(dim=(0, 2, 3)), video[:, :, :, 30:].float().mean(dim=(0, 2, 3))
    assert left[0] > 180 and left[2] < 70 and right[2] > 180 and right[0] < 70
    assert load_video(path, size=32).shape == (4, 3, 32, 32)


def test_resize_keeps_dtype():
    v = torch.randint(0, 256, (2, 3, 10, 20), dtype=torch.uint8)
    assert resize(v, (5, 7)).dtype == torch.uint8 and resize(v, (5, 7)).shape == (2, 3, 5, 7)
    assert resize(v.float() / 255, 8).dtype == torch.float32
    assert resize(v, (10, 20)) is v


def test_too_short_clip_says_how_long_it_is(clip12):
    with pytest.raises(MediaError) as e:
        load_video(clip12, n_frames=20)
    assert str(clip12) in str(e.value) and "2.500 s long" in str(e.value)
    with pytest.raises(MediaError, match="2.500 s long"):
        load_video(clip12, start=3.0)


# ---------------------------------------------------------------------------------------------
# bad files

def _zero_bytes(tmp_path, good):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    return p, "0 bytes"


def _missing(tmp_path, good):
    return tmp_path / "nowhere.mp4", "not found"


def _truncated(tmp_path, good):
    data = good.read_bytes()
    p = tmp_path / "half.mp4"
    p.write_bytes(data[: len(data) // 2])
    return p, "truncated"


def _truncated_faststart(tmp_path, good):
    """Cut in half after the index (moov first), so the header is intact but the frames are not."""
    src = tmp_path / "faststart.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(src), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for _ in range(36):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = src.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    p = tmp_path / "half_faststart.mp4"
    p.write_bytes(data[: len(data) // 2])
    return p, "truncated"


def _text(tmp_path, good):
    p = tmp_path / "notes.mp4"
    p.write_text("not a video\n" * 200)
    return p, "not a video"


def _wav(tmp_path, good):
    p = tmp_path / "sound.mp4"
    sf.write(p, np.zeros(16000, np.float32), 16000, format="WAV")
    return p, "video stream"


def _audio_only(tmp_path, good):
    p = tmp_path / "audio_only.mp4"
    with av.open(str(p), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with av.open(str(p)) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 0
    return p, "video stream"


@pytest.mark.parametrize("make", [_zero_bytes, _missing, _truncated, _truncated_faststart, _text, _wav,
                                  _audio_only], ids=lambda f: f.__name__.strip("_"))
def test_bad_file_raises_media_error_naming_file_and_reason(tmp_path, clip12, make):
    path, reason = make(tmp_path, clip12)
    with pytest.raises(MediaError) as e:
        load_video(path, n_frames=8)
    assert e.value.path == str(path) and str(path) in str(e.value)
    assert reason in e.value.reason


# ---------------------------------------------------------------------------------------------
# unusual but valid videos

def test_grayscale_video_loads_as_rgb(tmp_path):
    grey = np.full((12, 48, 64), 60, np.uint8)
    grey[:, :, 32:] = 200
    path = _encode(tmp_path / "grey.mp4", "libx264", "gray", grey, fmt="gray")
    video = load_video(path, size=(32, 40))
    assert video.shape == (4, 3, 32, 40) and video.dtype == torch.uint8
    v = video.int()
    assert (v[:, 0] - v[:, 1]).abs().max() <= 2 and (v[:, 1] - v[:, 2]).abs().max() <= 2
    assert v[:, :, :, 28:].float().mean() - v[:, :, :, :12].float().mean() > 100


@pytest.mark.parametrize("codec, pix_fmt", [("mpeg4", "yuv420p"), ("libx264", "yuv444p")])
def test_odd_sized_video_loads_at_the_asked_size(tmp_path, codec, pix_fmt):
    frames = _coded_frames(24, h=47, w=63)
    path = _encode(tmp_path / "odd.mp4", codec, pix_fmt, frames)
    native = load_video(path)
    assert native.shape == (8, 3, 47, 63)
    assert [_decode_index(f) for f in native] == [3 * k for k in range(8)]
    assert load_video(path, n_frames=8, size=64).shape == (8, 3, 64, 64)


@pytest.mark.parametrize("h, w", [(96, 48), (64, 24), (100, 40)])
def test_portrait_video_loads_at_the_asked_size(tmp_path, h, w):
    # 48 and 24 px wide: widths whose frames decord 0.6 cannot copy out (the loader falls back to PyAV)
    frames = np.zeros((24, h, w, 3), np.uint8)
    for k in range(24):
        frames[k, : 4 * k] = (200, 120, 40)  # the coloured band grows down the frame, 4 rows a frame
    path = write_video(tmp_path / "portrait.mp4", frames, 12)
    native = load_video(path)
    assert native.shape == (8, 3, h, w)
    band = (native[:, 0].float().mean(dim=2) > 120).sum(dim=1)  # coloured rows per loaded frame
    assert [int(b) for b in band] == [min(4 * 3 * k, h) for k in range(8)]
    assert load_video(path, size=(64, 64)).shape == (8, 3, 64, 64)


# ---------------------------------------------------------------------------------------------
# writing

@pytest.mark.parametrize("bad", ["float_frames", "grey_frames", "audio_shape"])
def test_write_video_leaves_no_partial_file(tmp_path, bad):
    path = tmp_path / "out.mp4"
    frames, audio = _coded_frames(24), None
    if bad == "float_frames":
        frames = frames.astype(np.float32)
    elif bad == "grey_frames":
        frames = frames[..., 0]
    else:  # video already muxed when the audio fails
        audio = np.zeros((2, 3, 16000), np.float32)
    with pytest.raises(ValueError):
        write_video(path, frames, 12, audio=audio)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = write_video(tmp_path / "out.mp4", _coded_frames(24), 12)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_video(path, _coded_frames(24), 12, audio=np.zeros((2, 3, 4), np.float32))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_write_video_with_audio_track_in_sync(tmp_path):
    t = np.arange(32000) / 16000
    sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sound[:8000] = 0  # the tone starts at 0.5 s, the video's frame 6
    path = write_video(tmp_path / "av.mp4", _coded_frames(24), 12, audio=sound)
    with av.open(str(path)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.rate == 16000 and a.layout.nb_channels == 1
    decoded = load_audio(path)
    assert 0 <= len(decoded) - len(sound) < 1024  # whole AAC frames; the priming is not played
    onset = np.argmax(np.abs(decoded) > 0.1) / 16000
    assert abs(onset - 0.5) < 0.005
    middle = decoded[12000:28000]  # 1 s: FFT bins are 1 Hz apart
    assert abs(np.argmax(np.abs(np.fft.rfft(middle))) - 440) <= 2
    assert abs(np.sqrt(np.mean(middle ** 2)) - 0.3 / np.sqrt(2)) < 0.03
    assert [_decode_index(f) for f in load_video(path)] == [0, 3, 6, 9, 12, 15, 18, 21]
    with av.open(str(write_video(tmp_path / "mute.mp4", _coded_frames(24), 12))) as c:
        assert len(c.streams.audio) == 0
