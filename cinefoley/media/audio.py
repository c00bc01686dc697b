"""Diff-Foley's audio front end: loading, the 128-bin log-mel, and its Griffin-Lim inverse.

The mel is Diff-Foley's ``data_preprocess/wav2spec.py``: a clip of L samples is cut to L - 1
samples, then ``|STFT|`` (n_fft 1024, hop 256, Hann, centred) goes through a 128-band Slaney mel
basis over 125-7600 Hz (magnitude, power 1) and is normalised as
``clip((20 log10(max(mel, 1e-5)) - 20 + 100) / 100, 0, 1)``. So 2.048 s gives 128 frames,
8.192 s gives 512 and 10 s gives 625; 16 mel frames per video frame at 4 fps.

Diff-Foley pinned librosa 0.8.0, whose ``stft`` and ``griffinlim`` pad the centred frames by
reflection (librosa >= 0.9 pads with zeros by default). We pass ``pad_mode="reflect"`` explicitly
so the mels match the ones the released LDM was trained on, including the first and last frames.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cinefoley.errors import MediaError

SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 256
N_MELS = 128
FMIN = 125.0
FMAX = 7600.0
MEL_FLOOR = 1e-5
PAD_MODE = "reflect"  # librosa 0.8.0's default, the version Diff-Foley used

# Reading a codec's output can end a few samples short of the nominal length (encoder priming,
# resampler rounding); a shortfall under this is zero-padded (10 ms < one 16-ms mel frame).
SHORTFALL_TOLERANCE_S = 0.01

_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg"}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        log = sf.info(str(path)).extra_info
    except (sf.LibsndfileError, RuntimeError) as e:
        raise MediaError(path, f"not a decodable audio file (truncated or corrupt?): {e}") from None
    # libsndfile reads what is there and only notes in its log that the data chunk is cut short
    cut = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", log, re.M)
    if cut and int(cut.group(2)) < int(cut.group(1)):
        raise MediaError(path, f"truncated: the header promises {cut.group(1)} bytes of audio, "
                               f"the file holds {cut.group(2)}")
    return data.mean(axis=1), int(sr)


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(path, f"not a decodable media file (truncated or corrupt?): {e}") from None
    with container:
        if not container.streams.audio:
            found = sorted({s.type for s in container.streams}) or ["none"]
            raise MediaError(path, f"no audio stream (streams found: {', '.join(found)})")
        stream = container.streams.audio[0]
        sr = int(stream.rate or stream.codec_context.sample_rate or 0)
        if sr <= 0:
            raise MediaError(path, "audio stream has no sample rate")
        # planar float at the stream's own rate and layout; we downmix and resample ourselves
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sr)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
        except av.error.FFmpegError as e:
            raise MediaError(path, f"audio stream cannot be decoded (truncated or corrupt?): {e}") from None
    if not chunks:
        raise MediaError(path, "audio stream has no decodable samples")
    return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), sr


def to_pcm16(wavs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms (n, L) as 16-bit PCM (int16) and a gain per row, half the bytes of float32.

    ``gain`` = max(1, peak): a sound louder than full scale is scaled into it rather than clipped, so
    :func:`from_pcm16` gives back the generator's level (the metrics see it) to 1/32767 of the peak.
    """
    wavs = np.asarray(wavs, dtype=np.float32)
    gain = np.maximum(1.0, np.abs(wavs).max(axis=-1, initial=0.0)).astype(np.float32)
    return np.round(wavs / gain[..., None] * 32767).astype(np.int16), gain


def from_pcm16(pcm: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """The float32 waveforms of :func:`to_pcm16`."""
    return pcm.astype(np.float32) / 32767 * np.asarray(gain, dtype=np.float32)[..., None]


def load_audio(path: str | Path, *, sr: int = SAMPLE_RATE, duration: float | None = None,
               offset: float = 0.0) -> np.ndarray:
    """Mono float32 audio of ``path`` at ``sr`` Hz, from ``offset`` seconds.

    wav/flac/ogg are read with soundfile, anything else (mp4, mkv, ...) with PyAV (its first audio
    stream). Channels are averaged (like ``librosa.load``), then resampled with soxr (``soxr_hq``,
    librosa 0.11's default; Diff-Foley's librosa 0.8 used resampy ``kaiser_best``). With ``duration``
    exactly ``round(sr * duration)`` samples come back; a file that ends more than
    ``SHORTFALL_TOLERANCE_S`` early is a :class:`MediaError` that says how long it is.
    Missing, empty, undecodable or audio-less files are :class:`MediaError` too.
    """
    import soxr

    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a file")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty (0 bytes)")
    if offset < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"offset must be >= 0 and duration > 0, got offset={offset}, duration={duration}")

    reader = _read_soundfile if path.suffix.lower() in _SOUNDFILE_SUFFIXES else _read_pyav
    wav, native_sr = reader(path)
    if wav.size == 0:
        raise MediaError(path, "audio stream is empty (0 samples)")
    total_s = wav.size / native_sr

    # resample the whole file, then cut, as Diff-Foley does (no filter edge effects at the cut)
    if native_sr != sr:
        wav = soxr.resample(wav, native_sr, sr, quality="soxr_hq")  # what librosa.resample runs
    start = int(round(offset * sr))
    wav = np.ascontiguousarray(wav[start:] if duration is None else wav[start:start + int(round(sr * duration))],
                               dtype=np.float32)
    if duration is None:
        if wav.size == 0:
            raise MediaError(path, f"audio is {total_s:.3f} s long, nothing left after offset {offset:.3f} s")
        return wav

    want = int(round(sr * duration))
    if want - wav.size > SHORTFALL_TOLERANCE_S * sr:
        raise MediaError(path, f"audio is {total_s:.3f} s long, shorter than the {duration:.3f} s asked for "
                               f"from offset {offset:.3f} s")
    return np.pad(wav, (0, max(want - wav.size, 0)))[:want]


# --------------------------------------------------------------------------------------------
# Mel spectrogram (wav2spec.py) and its librosa inverse (demo_util / transform_spec inverse_op)
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """The ``(128, 513)`` Slaney mel filter bank of wav2spec.py (float32)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)


def normalise_mel(mel):
    """``clip((20 log10(max(mel, 1e-5)) - 20 + 100) / 100, 0, 1)`` for numpy arrays or tensors."""
    if isinstance(mel, torch.Tensor):
        return ((20 * torch.log10(mel.clamp_min(MEL_FLOOR)) + 80) / 100).clamp(0, 1)
    return np.clip((20 * np.log10(np.maximum(mel, MEL_FLOOR)) + 80) / 100, 0, 1).astype(np.float32)


def denormalise_mel(spec):
    """The inverse of :func:`normalise_mel` (``10 ** ((spec * 100 - 100 + 20) / 20)``) before the clip."""
    if isinstance(spec, torch.Tensor):
        return torch.pow(10.0, (spec * 100 - 80) / 20)
    return np.power(10.0, (np.asarray(spec, dtype=np.float32) * 100 - 80) / 20).astype(np.float32)


def n_mel_frames(n_samples: int) -> int:
    """Mel frames of a clip of ``n_samples`` samples (cut to n - 1, centred STFT, hop 256)."""
    return 1 + (n_samples - 1) // HOP_LENGTH


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Diff-Foley's normalised log-mel of ``(L,)`` or ``(B, L)`` audio: ``(128, N)`` / ``(B, 128, N)``.

    The last sample is dropped first (wav2spec's ``y[:length - 1]``), so N = 1 + (L - 1) // 256.
    """
    import librosa

    y = np.asarray(wav, dtype=np.float32)
    if y.ndim not in (1, 2) or y.shape[-1] < 2:
        raise ValueError(f"expected audio of shape (L,) or (B, L) with L >= 2, got {y.shape}")
    mag = np.abs(librosa.stft(y[..., :-1], n_fft=N_FFT, hop_length=HOP_LENGTH, pad_mode=PAD_MODE))
    return normalise_mel(np.matmul(mel_basis(), mag))


@lru_cache(maxsize=8)
def _torch_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=device)
    return window, torch.from_numpy(mel_basis()).to(device)


def mel_spectrogram_torch(wav: torch.Tensor) -> torch.Tensor:
    """:func:`mel_spectrogram` in torch (fp32) on ``wav``'s device, for ``(L,)`` or ``(B, L)``.

    Matches the librosa version to ``|diff| <= 2e-4`` in normalised units (0.02 dB; tested),
    the gap coming from float32 FFT rounding in quiet bins.
    """
    if wav.ndim not in (1, 2) or wav.shape[-1] < 2:
        raise ValueError(f"expected audio of shape (L,) or (B, L) with L >= 2, got {tuple(wav.shape)}")
    window, basis = _torch_constants(wav.device)
    y = wav[..., :-1].float()
    spec = torch.stft(y.reshape(-1, y.shape[-1]), N_FFT, HOP_LENGTH, window=window, center=True,
                      pad_mode=PAD_MODE, return_complex=True)
    mel = normalise_mel(basis @ spec.abs())
    return mel.reshape(*y.shape[:-1], N_MELS, -1)


def mel_to_audio_librosa(mel: np.ndarray, *, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Diff-Foley's reference vocoder: undo the normalisation, NNLS mel -> STFT, Griffin-Lim.

    ``(128, N)`` -> ``((N - 1) * 256,)`` float32. This is ``inverse_op`` of Diff-Foley's
    ``evaluation/transform_spec.py``: ``librosa.feature.inverse.mel_to_stft(sr=16000, n_fft=1024,
    fmin=125, fmax=7600, power=1)`` then ``librosa.griffinlim(hop_length=256)`` (momentum 0.99,
    random initial phase, here from ``RandomState(seed)`` so it is deterministic). Diff-Foley's
    demo (``demo_util.inverse_op``) passes sr=22050 to ``mel_to_stft``, which does not match the
    16 kHz analysis; we use 16000 like its evaluation code. ``pad_mode="reflect"`` as in librosa 0.8.
    """
    import librosa

    spec = np.asarray(mel, dtype=np.float32)
    if spec.ndim != 2 or spec.shape[0] != N_MELS:
        raise ValueError(f"expected a (128, N) mel, got {spec.shape}")
    magnitude = librosa.feature.inverse.mel_to_stft(denormalise_mel(spec), sr=SAMPLE_RATE, n_fft=N_FFT,
                                                    fmin=FMIN, fmax=FMAX, power=1)
    wav = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=HOP_LENGTH, pad_mode=PAD_MODE,
                             random_state=seed)
    return wav.astype(np.float32)


def shift_mels(mels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each mel (B, n_mels, N) moved by ``shifts[i]`` mel frames (> 0: later), the gap filled with its quietest
    value (the room tone), nothing wrapped round."""
    n = mels.shape[-1]
    source = torch.arange(n)[None] - shifts[:, None]                      # (B, N)
    inside = (source >= 0) & (source < n)
    moved = mels.gather(2, source.clamp(0, n - 1)[:, None].expand(-1, mels.shape[1], -1))
    floor = mels.amin(dim=(1, 2), keepdim=True).expand_as(mels)
    return torch.where(inside[:, None], moved, floor)
