"""Audio loading, Diff-Foley's mel front end and its librosa Griffin-Lim inverse."""

from __future__ import annotations

import fractions

import av
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch
from threadpoolctl import threadpool_limits

from cinefoley.media.audio import (mel_spectrogram, mel_spectrogram_torch, mel_to_audio_librosa, load_audio,
                             n_mel_frames)
from cinefoley.errors import MediaError

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    """Small arrays: on a shared 2-core machine extra torch/BLAS threads only spin (up to 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def broadband_clip(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A chirp, a gated harmonic stack and decaying noise bursts: broadband, with quiet bins."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.3 * np.sin(2 * np.pi * (220 * t + 300 * t ** 2 / seconds))
    for h in range(1, 6):
        y += 0.1 / h * np.sin(2 * np.pi * 440 * h * t) * (t % 1.0 < 0.5)
    y += 0.3 * np.exp(-30 * (t % 0.37)) * rng.randn(t.size)
    return y.astype(np.float32)


def write_mp4(path, audio: np.ndarray | None, sr: int = 44100, seconds: float = 1.0, layout: str = "stereo"):
    """An h264 mp4 at 4 fps with, optionally, an AAC track of ``audio`` (channels, samples)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=4)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        if audio is not None:
            stream = container.add_stream("aac", rate=sr)
            stream.layout = layout
        for i in range(int(seconds * 4)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            for s in range(0, audio.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, s:s + 1024], np.float32),
                                                   format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = sr, s, fractions.Fraction(1, sr)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


# ------------------------------------------------------------------------------------ loading

def test_load_wav_exact_samples_offset_and_duration(tmp_path):
    y = broadband_clip(2.0)
    sf.write(tmp_path / "a.wav", y, SR, subtype="FLOAT")
    full = load_audio(tmp_path / "a.wav")
    assert full.dtype == np.float32 and full.shape == (32000,)
    np.testing.assert_array_equal(full, y)
    part = load_audio(tmp_path / "a.wav", duration=1.024, offset=0.5)
    assert part.shape == (16384,)
    np.testing.assert_array_equal(part, y[8000:8000 + 16384])


def test_load_resamples_and_averages_channels(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left, right = np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1).astype(np.float32), sr, subtype="FLOAT")
    y = load_audio(tmp_path / "s.wav", duration=0.5)
    assert y.shape == (8000,)
    want = librosa.resample(((left + right) / 2).astype(np.float32), orig_sr=sr, target_sr=SR,
                            res_type="soxr_hq")[:8000]
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_load_mp4_audio_track(tmp_path):
    sr = 44100
    t = np.arange(2 * sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    write_mp4(tmp_path / "a.mp4", np.stack([tone, tone]), sr=sr, seconds=2)
    y = load_audio(tmp_path / "a.mp4", duration=1.5, offset=0.25)
    assert y.dtype == np.float32 and y.shape == (24000,)
    expected = 0.5 * np.sin(2 * np.pi * 440 * (0.25 + np.arange(24000) / SR))
    # AAC is lossy but keeps a pure tone in place (the encoder's priming is trimmed on decode)
    assert np.corrcoef(y[1000:-1000], expected[1000:-1000])[0, 1] > 0.99


def test_shortfall_within_tolerance_is_padded(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(31900, 0.5, np.float32), SR)  # 6 ms short of 2.0 s
    y = load_audio(tmp_path / "a.wav", duration=2.0)
    assert y.shape == (32000,) and y[31899] == 0.5 and not y[31900:].any()


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.wav: file not found"):
        load_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: file is empty \(0 bytes\)"):
        load_audio(tmp_path / "empty.mp4")


def test_truncated_mp4(tmp_path):
    t = np.arange(88200) / 44100
    write_mp4(tmp_path / "a.mp4", np.stack([np.sin(2 * np.pi * 440 * t)] * 2), seconds=2)
    data = (tmp_path / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4: not a decodable media file \(truncated"):
        load_audio(tmp_path / "cut.mp4")


def test_mp4_without_audio(tmp_path):
    write_mp4(tmp_path / "silent_film.mp4", None)
    with pytest.raises(MediaError, match=r"silent_film\.mp4: no audio stream \(streams found: video\)"):
        load_audio(tmp_path / "silent_film.mp4")


def test_truncated_and_garbage_wav(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    data = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.wav: truncated: the header promises 32000 bytes"):
        load_audio(tmp_path / "cut.wav")
    (tmp_path / "text.wav").write_bytes(b"not audio at all " * 20)
    with pytest.raises(MediaError, match=r"text\.wav: not a decodable audio file"):
        load_audio(tmp_path / "text.wav")


def test_too_short_says_how_long(tmp_path):
    sf.write(tmp_path / "short.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(MediaError, match=r"short\.wav: audio is 1\.000 s long, shorter than the 2\.048 s"):
        load_audio(tmp_path / "short.wav", duration=2.048)
    with pytest.raises(MediaError, match=r"audio is 1\.000 s long, shorter than the 0\.800 s asked for "
                                         r"from offset 0\.500 s"):
        load_audio(tmp_path / "short.wav", duration=0.8, offset=0.5)


# ------------------------------------------------------------------------------------ mel

def reference_mel(y: np.ndarray) -> np.ndarray:
    """wav2spec.py restated with numpy's FFT: cut, reflect-pad, periodic Hann, |rfft|, mel, normalise."""
    y = y[:-1].astype(np.float64)
    padded = np.pad(y, 512, mode="reflect")
    n = 1 + (padded.size - 1024) // 256
    frames = np.stack([padded[i * 256: i * 256 + 1024] for i in range(n)], 1)
    window = scipy.signal.get_window("hann", 1024, fftbins=True)
    mag = np.abs(np.fft.rfft(frames * window[:, None], axis=0))
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128, fmin=125, fmax=7600, dtype=np.float64)
    mel = basis @ mag
    return np.clip((20 * np.log10(np.maximum(mel, 1e-5)) - 20 + 100) / 100, 0, 1)


@pytest.mark.parametrize("seconds,frames", [(2.048, 128), (8.192, 512), (10.0, 625)])
def test_mel_matches_wav2spec_formula(seconds, frames):
    y = broadband_clip(seconds)
    spec = mel_spectrogram(y)
    assert spec.shape == (128, frames) and spec.dtype == np.float32
    assert n_mel_frames(y.size) == frames
    assert 0.0 <= spec.min() and spec.max() <= 1.0 and spec.max() > 0.8
    np.testing.assert_allclose(spec, reference_mel(y), atol=2e-4)


def test_mel_edges_use_reflect_padding():
    # librosa >= 0.9 zero-pads by default; Diff-Foley's librosa 0.8 reflected. The edge frames differ.
    y = broadband_clip(2.048)
    spec = mel_spectrogram(y)
    mag = np.abs(librosa.stft(y[:-1], n_fft=1024, hop_length=256, pad_mode="constant"))
    zero_padded = np.clip((20 * np.log10(np.maximum(librosa.filters.mel(
        sr=16000, n_fft=1024, n_mels=128, fmin=125, fmax=7600) @ mag, 1e-5)) + 80) / 100, 0, 1)
    assert np.abs(spec[:, 0] - zero_padded[:, 0]).max() > 0.01
    np.testing.assert_allclose(spec[:, 4:-4], zero_padded[:, 4:-4], atol=1e-5)


def test_mel_batch_equals_one_by_one_and_silence_is_zero():
    batch = np.stack([broadband_clip(2.048, seed=s) for s in range(3)] + [np.zeros(32768, np.float32)])
    spec = mel_spectrogram(batch)
    assert spec.shape == (4, 128, 128)
    for i in range(4):
        np.testing.assert_allclose(spec[i], mel_spectrogram(batch[i]), atol=1e-6)
    assert not spec[3].any()


def test_mel_torch_matches_librosa():
    rng = np.random.RandomState(1)
    batch = np.stack([broadband_clip(2.048), 1e-3 * rng.randn(32768), 30 * rng.randn(32768)]).astype(np.float32)
    expected = mel_spectrogram(batch)
    got = mel_spectrogram_torch(torch.from_numpy(batch))
    assert got.shape == (3, 128, 128) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-4)
    one = mel_spectrogram_torch(torch.from_numpy(broadband_clip(10.0)))
    assert one.shape == (128, 625)
    np.testing.assert_allclose(one.numpy(), mel_spectrogram(broadband_clip(10.0)), atol=2e-4)


def test_mel_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected audio"):
        mel_spectrogram(np.zeros((2, 2, 100), np.float32))
    with pytest.raises(ValueError, match="expected audio"):
        mel_spectrogram_torch(torch.zeros(1))


def test_mel_to_audio_librosa_inverts_deterministically():
    spec = mel_spectrogram(broadband_clip(2.048))
    wav = mel_to_audio_librosa(spec, n_iter=16, seed=3)
    assert wav.dtype == np.float32 and wav.shape == ((128 - 1) * 256,)
    np.testing.assert_array_equal(wav, mel_to_audio_librosa(spec, n_iter=16, seed=3))
    assert not np.array_equal(wav, mel_to_audio_librosa(spec, n_iter=16, seed=4))
    again = mel_spectrogram(np.append(wav, 0))  # one extra sample so the cut keeps all 128 frames
    assert again.shape == spec.shape and np.abs(again - spec).mean() < 0.05


def test_pcm16_keeps_the_level_of_sounds_louder_than_full_scale():
    from cinefoley.media.audio import from_pcm16, to_pcm16

    rng = np.random.default_rng(0)
    wavs = np.stack([0.6 * rng.standard_normal(1000), 0.1 * np.sin(np.arange(1000.0)),
                     np.zeros(1000)]).astype(np.float32)
    pcm, gain = to_pcm16(wavs)
    assert pcm.dtype == np.int16 and pcm.nbytes == wavs.nbytes // 2
    back = from_pcm16(pcm, gain)
    assert back.dtype == np.float32 and np.abs(wavs).max() > 1  # the loud one is not clipped:
    step = np.maximum(1, np.abs(wavs).max(axis=1, keepdims=True)) / 32767
    assert (np.abs(back - wavs) <= 0.5 * step + 1e-7).all()
