"""PANNs Cnn14 at 16 kHz, AudioLDM's FD / KID / KL / IS network, from ``Cnn14_16k_mAP=0.438.pth``.

Run as AudioLDM's evaluation (``audioldm_eval`` with ``backbone="cnn14"``) runs it: log-mel front end of
torchlibrosa (the package PANNs itself uses, so the file's ``spectrogram_extractor.stft.conv_real``,
``conv_imag`` and ``logmel_extractor.melW`` load as they are): Hann window 512, hop 160, centred with
reflect padding, power spectrogram, 64 Slaney mel bands 50–8000 Hz, ``10 log10(max(x, 1e-10))``, no
top-dB clip. Then ``bn0`` over the mel axis, six ConvBlocks (64 … 2048, average pools 2×2 ×5, none on
the last), mean over frequency, max + mean over time, ``fc1``. FD/KID use the **"2048" embedding =
ReLU(fc1)**, KL/IS the **pre-sigmoid logits** ``fc_audioset(ReLU(fc1))`` (527 AudioSet classes).
Input as AudioLDM's ``WaveDataset``: first channel, mean removed (DC), zero-padded to ≥ 2 s, no crop.

Inference only: dropout and SpecAugment, off in eval mode, are left out. No architecture package fits:
``panns_inference`` downloads a label CSV when imported.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from cinefoley.models.checkpoints import (StateDictSource, compare_keys, load_source, read_state_dict, require,
                                          source_name)
from cinefoley.errors import CheckpointError

#: AudioLDM's Cnn14 at 16 kHz (``EvaluationHelper(16000, ...)``), for ``Cnn14_16k_mAP=0.438.pth``.
PANNS_16K = {"sample_rate": 16000, "window_size": 512, "hop_size": 160, "mel_bins": 64, "fmin": 50.0,
             "fmax": 8000.0, "classes_num": 527}
#: AudioLDM's ``pad_short_audio``: clips shorter than 2 s at 16 kHz are zero-padded to it.
PANNS_MIN_SAMPLES = 32000


class ConvBlock(nn.Module):
    """PANNs' ConvBlock: two (3×3 conv without bias, BN, ReLU), then an average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int] | None) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool) if pool else x


class Cnn14(nn.Module):
    """PANNs Cnn14 with the original attribute names: waveform (B, N) -> ("2048" (B, 2048), logits (B, 527)).

    ``base_channels`` scales the six blocks (64 in the released model; the tests use small ones).
    """

    def __init__(self, sample_rate: int = 16000, window_size: int = 512, hop_size: int = 160, mel_bins: int = 64,
                 fmin: float = 50.0, fmax: float = 8000.0, classes_num: int = 527, base_channels: int = 64):
        super().__init__()
        self.sample_rate = sample_rate
        self.spectrogram_extractor = Spectrogram(n_fft=window_size, hop_length=hop_size, win_length=window_size,
                                                 window="hann", center=True, pad_mode="reflect",
                                                 freeze_parameters=True)
        self.logmel_extractor = LogmelFilterBank(sr=sample_rate, n_fft=window_size, n_mels=mel_bins, fmin=fmin,
                                                 fmax=fmax, ref=1.0, amin=1e-10, top_db=None,
                                                 freeze_parameters=True)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = [base_channels * 2**i for i in range(6)]
        for i, (cin, cout) in enumerate(zip([1] + widths[:-1], widths), start=1):
            self.add_module(f"conv_block{i}", ConvBlock(cin, cout))
        self.embed_dim = widths[-1]
        self.fc1 = nn.Linear(self.embed_dim, self.embed_dim)
        self.fc_audioset = nn.Linear(self.embed_dim, classes_num)

    def logmel(self, wav: torch.Tensor) -> torch.Tensor:
        """The front end: (B, N) -> log-mel (B, 1, frames, mel_bins), frames = 1 + N // hop."""
        return self.logmel_extractor(self.spectrogram_extractor(wav))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.logmel(wav)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over the mel bands
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else None)  # the last pool is 1×1
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return embedding, self.fc_audioset(embedding)


def panns_input(wav: np.ndarray) -> np.ndarray:
    """AudioLDM's WaveDataset: first channel of (C, N), mean removed, zero-padded to ≥ 2 s (no crop)."""
    x = np.asarray(wav, dtype=np.float32)
    x = x[0] if x.ndim == 2 else x
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty clip (N,) or (C, N), got shape {np.shape(wav)}")
    x = x - x.mean()
    return np.pad(x, (0, max(0, PANNS_MIN_SAMPLES - x.size)))


def read_panns_state_dict(source: StateDictSource) -> dict[str, torch.Tensor]:
    """The flat state dict of a PANNs file: ``{"model": state_dict, ...}`` (PANNs' layout) or a plain one."""
    obj = load_source(source)
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    try:
        return read_state_dict(obj)
    except CheckpointError as e:
        raise CheckpointError(source_name(source), e.reason) from None


def load_panns(source: StateDictSource, **arch) -> Cnn14:
    """A :class:`Cnn14` (eval mode) from a ``Cnn14_16k_mAP=0.438.pth``-format file or state dict.

    ``arch`` overrides :data:`PANNS_16K` (and ``base_channels``). Every key must match in name and
    shape, front-end buffers included; only BatchNorm's ``num_batches_tracked`` counters may be
    absent (they are used in training only).
    """
    state = read_panns_state_dict(source)
    model = Cnn14(**{**PANNS_16K, **arch})
    expected = {k: v.shape for k, v in model.state_dict().items()}
    report = compare_keys(state, expected)
    absent_counters = [k for k in report.missing if k.endswith("num_batches_tracked")]
    report.missing = [k for k in report.missing if k not in absent_counters]
    require(report, source, "PANNs Cnn14")
    model.load_state_dict({**{k: model.state_dict()[k] for k in absent_counters}, **state})
    model.key_report = report
    return model.eval()
