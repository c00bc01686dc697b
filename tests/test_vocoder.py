"""The batched torch vocoder against Diff-Foley's librosa route (NNLS + Griffin-Lim)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from test_audio import broadband_clip, single_threaded  # noqa: F401 (an autouse fixture)

from cinefoley.media.audio import denormalise_mel, mel_spectrogram, mel_spectrogram_torch, mel_to_audio_librosa
from cinefoley.media.vocoder import GriffinLimVocoder, mel_to_audio, mel_to_magnitude, spectral_convergence


@pytest.fixture(scope="module")
def mels() -> np.ndarray:
    """Two 2.048-s mels (128 frames): the broadband test signal and quiet noise."""
    noise = 0.05 * np.random.RandomState(7).randn(32768).astype(np.float32)
    return np.stack([mel_spectrogram(broadband_clip(2.048)), mel_spectrogram(noise)])


def librosa_magnitude(spec: np.ndarray) -> np.ndarray:
    return librosa.feature.inverse.mel_to_stft(denormalise_mel(spec), sr=16000, n_fft=1024, fmin=125,
                                               fmax=7600, power=1)


def reanalysed(wav: torch.Tensor) -> torch.Tensor:
    """The mel of a vocoded clip; one extra sample so the wav2spec cut keeps all N frames."""
    return mel_spectrogram_torch(torch.nn.functional.pad(wav, (0, 1)))


@pytest.mark.parametrize("seconds", [2.048, 10.0])  # 10 s = 625 frames crosses librosa's 512-column block
def test_magnitude_equals_librosa_mel_to_stft(seconds):
    spec = mel_spectrogram(broadband_clip(seconds))
    expected = librosa_magnitude(spec)
    got = mel_to_magnitude(torch.from_numpy(spec)[None])[0].numpy()
    assert got.shape == expected.shape == (513, spec.shape[1]) and got.min() >= 0
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-5


def test_shapes_and_input_kinds(mels):
    out = GriffinLimVocoder(n_iter=2)(torch.from_numpy(mels))
    assert out.shape == (2, 127 * 256) and out.dtype == torch.float32
    single = GriffinLimVocoder(n_iter=2)(mels[0])  # numpy (128, N): a batch of one
    assert single.shape == (1, 127 * 256)
    torch.testing.assert_close(single[0], out[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"expected mels of shape"):
        GriffinLimVocoder()(np.zeros((2, 80, 10), np.float32))


def test_agrees_with_librosa_route(mels):
    """The tolerances stated in the module docstring: SC within 0.01, re-analysed mels within 0.005."""
    torch_wavs = GriffinLimVocoder()(mels)
    librosa_wavs = torch.from_numpy(np.stack([mel_to_audio_librosa(m) for m in mels]))
    assert torch_wavs.shape == librosa_wavs.shape
    magnitude = torch.from_numpy(np.stack([librosa_magnitude(m) for m in mels]))
    sc_torch = spectral_convergence(torch_wavs, magnitude)
    sc_librosa = spectral_convergence(librosa_wavs, magnitude)
    assert (sc_torch - sc_librosa).abs().max() < 0.01
    assert sc_torch.max() < 0.3  # Griffin-Lim got close to a consistent spectrogram
    mel_torch, mel_librosa = reanalysed(torch_wavs), reanalysed(librosa_wavs)
    assert (mel_torch - mel_librosa).abs().mean(dim=(1, 2)).max() < 0.005
    assert (mel_torch - torch.from_numpy(mels)).abs().mean() < 0.05


def test_deterministic_and_seeded(mels):
    vocoder = GriffinLimVocoder(n_iter=4, seed=1)
    first = vocoder(mels)
    assert torch.equal(first, vocoder(mels))
    assert not torch.allclose(first, GriffinLimVocoder(n_iter=4, seed=2)(mels))


def test_batch_equals_one_by_one(mels):
    vocoder = GriffinLimVocoder(n_iter=8)
    batch = vocoder(mels)
    for i in range(len(mels)):
        torch.testing.assert_close(batch[i], vocoder(mels[i:i + 1])[0], atol=1e-6, rtol=0)


def test_more_iterations_converge_further(mels):
    magnitude = mel_to_magnitude(torch.from_numpy(mels))
    sc = [spectral_convergence(GriffinLimVocoder(n_iter=n).griffin_lim(magnitude), magnitude) for n in (1, 8, 32)]
    assert (sc[0] > sc[1]).all() and (sc[1] > sc[2]).all()


def test_spectral_convergence_of_a_true_stft_is_zero():
    wav = torch.from_numpy(broadband_clip(1.0))[None]
    magnitude = torch.stft(wav, 1024, 256, window=torch.hann_window(1024), pad_mode="reflect",
                           return_complex=True).abs()
    assert spectral_convergence(wav, magnitude).item() < 1e-6


def test_autocast_does_not_lower_precision(mels):
    vocoder = GriffinLimVocoder(n_iter=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = vocoder(mels)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, vocoder(mels), atol=1e-6, rtol=0)


def test_mel_to_audio_backends(mels):
    wav = mel_to_audio(mels[0], n_iter=4)
    assert isinstance(wav, np.ndarray) and wav.shape == (127 * 256,) and wav.dtype == np.float32
    reference = mel_to_audio(mels[:1], backend="librosa", n_iter=4)
    assert reference.shape == (1, 127 * 256)
    assert np.corrcoef(wav, reference[0])[0, 1] > 0.99  # same seed, same algorithm
    with pytest.raises(ValueError, match="backend"):
        mel_to_audio(mels, backend="hifigan")
