"""The real tier's evaluation networks, from weight files the user names: PANNs Cnn14, VGGish, Align Acc.

Run as AudioLDM's evaluation (``audioldm_eval`` with ``backbone="cnn14"``) runs them:

- **PANNs Cnn14 at 16 kHz** (``Cnn14_16k_mAP=0.438.pth``, ``{"model": state_dict}``): log-mel front end
  of torchlibrosa (the package PANNs itself uses, so the file's ``spectrogram_extractor.stft.conv_real``,
  ``conv_imag`` and ``logmel_extractor.melW`` load as they are): Hann window 512, hop 160, centred with
  reflect padding, power spectrogram, 64 Slaney mel bands 50–8000 Hz, ``10 log10(max(x, 1e-10))``, no
  top-dB clip. Then ``bn0`` over the mel axis, six ConvBlocks (64 … 2048, average pools 2×2 ×5, none on
  the last), mean over frequency, max + mean over time, ``fc1``. FD/KID use the **"2048" embedding =
  ReLU(fc1)**, KL/IS the **pre-sigmoid logits** ``fc_audioset(ReLU(fc1))`` (527 AudioSet classes).
  Input as AudioLDM's ``WaveDataset``: first channel, mean removed (DC), zero-padded to ≥ 2 s, no crop.
- **VGGish** (harritaylor/torchvggish ``vggish-10086976.pth``, keys ``features.*``, ``embeddings.*``), with
  AudioLDM's FAD settings: no PCA/quantisation and the last ReLU removed, so one **128-d pre-ReLU vector
  per 0.96-s example**. Front end per VGGish's definition (``mel_features.py``): 25-ms frames (400
  samples) every 10 ms (160), periodic Hann, ``|rfft|`` over 512 points, 64 HTK-mel bands 125–7500 Hz
  (triangles linear in mel, DC bin dropped), ``log(mel + 0.01)``, cut into non-overlapping 96-frame
  examples. Frames = 1 + ⌊(N − 400)/160⌋, examples = 1 + ⌊(frames − 96)/96⌋: 2 for 2 s, 8 for 8 s, 10 for 10 s.
  AudioLDM's FAD reads the files itself (no DC removal, no padding); so does this extractor.
- **Align Acc**: :func:`align_acc_probs` runs Diff-Foley's eval classifier
  (:mod:`cinefoley.align_classifier`) as ``evaluation/align_acc.py`` does.

Both networks are inference-only here: dropout and SpecAugment, off in eval mode, are left out.
No architecture package fits: ``panns_inference`` downloads a label CSV when imported, and
``torchvggish`` downloads weights when its model is made and pulls in resampy/numba.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from cinefoley.align_classifier import AlignmentClassifier
from cinefoley.checkpoints import (StateDictSource, compare_keys, load_source, read_state_dict, require,
                                   source_name)
from cinefoley.errors import CheckpointError
from cinefoley.metrics.extractors import AudioFeatureExtractor

#: AudioLDM's Cnn14 at 16 kHz (``EvaluationHelper(16000, ...)``), for ``Cnn14_16k_mAP=0.438.pth``.
PANNS_16K = {"sample_rate": 16000, "window_size": 512, "hop_size": 160, "mel_bins": 64, "fmin": 50.0,
             "fmax": 8000.0, "classes_num": 527}
#: AudioLDM's ``pad_short_audio``: clips shorter than 2 s at 16 kHz are zero-padded to it.
PANNS_MIN_SAMPLES = 32000

VGGISH_SAMPLE_RATE = 16000
VGGISH_WINDOW = 400  # 25 ms
VGGISH_HOP = 160  # 10 ms
VGGISH_FFT = 512  # the next power of two above the window
VGGISH_MELS = 64
VGGISH_FMIN, VGGISH_FMAX = 125.0, 7500.0
VGGISH_LOG_OFFSET = 0.01
VGGISH_EXAMPLE_FRAMES = 96  # 0.96 s of 10-ms frames; examples do not overlap

#: Diff-Foley's Align Acc window: 8.192 s = 512 mel frames and 32 CAVP frames.
ALIGN_MEL_FRAMES = 512
ALIGN_VIDEO_FRAMES = 32


# ----------------------------------------------------------------------------------------------
# PANNs Cnn14

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


# ----------------------------------------------------------------------------------------------
# VGGish

class VGGish(nn.Module):
    """VGGish (torchvggish layout) without PCA and without its last ReLU: examples (n, 1, 96, 64) -> (n, 128).

    ``features`` is VGG's conv stack (indices 0, 3, 6, 8, 11, 13 are convolutions), ``embeddings`` the
    three Linear layers (0, 2, 4). ``channels``/``hidden`` scale it (the tests use small ones).
    """

    def __init__(self, channels: Sequence[int] = (64, 128, 256, 256, 512, 512), hidden: int = 4096,
                 embed_dim: int = 128):
        super().__init__()
        c = list(channels)
        if len(c) != 6:
            raise ValueError(f"VGGish has 6 convolutions, got channels={channels}")
        layers: list[nn.Module] = []
        cin = 1
        for i, cout in enumerate(c):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            if i in (0, 1, 3, 5):  # max-pool after conv1, conv2, conv3_2 and conv4_2
                layers.append(nn.MaxPool2d(2, 2))
            cin = cout
        self.features = nn.Sequential(*layers)
        # 96×64 examples pooled four times: 6×4
        self.embeddings = nn.Sequential(nn.Linear(c[-1] * 6 * 4, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                        nn.Linear(hidden, embed_dim))

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)
        # flatten in TensorFlow's (H, W, C) order, as the ported weights expect
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))


def vggish_frame_count(n_samples: int) -> int:
    """10-ms log-mel frames of a clip: 1 + ⌊(N − 400)/160⌋ (0 when shorter than one window)."""
    return 1 + (n_samples - VGGISH_WINDOW) // VGGISH_HOP if n_samples >= VGGISH_WINDOW else 0


def vggish_example_count(n_samples: int) -> int:
    """0.96-s examples of a clip: 1 + ⌊(frames − 96)/96⌋ (0 when shorter than one example)."""
    frames = vggish_frame_count(n_samples)
    return 1 + (frames - VGGISH_EXAMPLE_FRAMES) // VGGISH_EXAMPLE_FRAMES if frames >= VGGISH_EXAMPLE_FRAMES else 0


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=1)
def vggish_mel_matrix() -> np.ndarray:
    """(257, 64) weights from |rfft| bins to VGGish's mel bands: triangles linear in HTK mel, DC bin zero."""
    bins = _hz_to_mel(np.linspace(0.0, VGGISH_SAMPLE_RATE / 2, VGGISH_FFT // 2 + 1))[:, None]
    edges = np.linspace(_hz_to_mel(VGGISH_FMIN), _hz_to_mel(VGGISH_FMAX), VGGISH_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)))
    weights[0] = 0.0
    weights.setflags(write=False)
    return weights


def vggish_log_mel(wav: np.ndarray) -> np.ndarray:
    """(frames, 64) ``log(mel + 0.01)`` of a 16-kHz clip, in float64 like the NumPy reference."""
    x = np.asarray(wav, dtype=np.float64)
    if x.ndim != 1 or x.size < VGGISH_WINDOW:
        raise ValueError(f"VGGish needs a mono clip of at least {VGGISH_WINDOW} samples, got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, VGGISH_WINDOW)[::VGGISH_HOP]
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(VGGISH_WINDOW) / VGGISH_WINDOW)
    magnitude = np.abs(np.fft.rfft(frames * periodic_hann, VGGISH_FFT))
    return np.log(magnitude @ vggish_mel_matrix() + VGGISH_LOG_OFFSET)


def vggish_examples(wav: np.ndarray) -> np.ndarray:
    """(n, 96, 64) float32 non-overlapping 0.96-s log-mel examples (the incomplete tail is dropped)."""
    n = vggish_example_count(np.asarray(wav).shape[-1])
    if n == 0:
        raise ValueError(f"a clip of {np.asarray(wav).shape[-1]} samples is shorter than one 0.96-s VGGish "
                         f"example ({VGGISH_WINDOW + (VGGISH_EXAMPLE_FRAMES - 1) * VGGISH_HOP} samples)")
    log_mel = vggish_log_mel(wav)[: n * VGGISH_EXAMPLE_FRAMES]
    return log_mel.reshape(n, VGGISH_EXAMPLE_FRAMES, VGGISH_MELS).astype(np.float32)


def load_vggish(source: StateDictSource, **arch) -> VGGish:
    """A :class:`VGGish` (eval mode) from a ``vggish-10086976.pth``-format file or state dict.

    Every ``features.*``/``embeddings.*`` key must match in name and shape. A state dict saved from
    torchvggish's hub model with its post-processor also holds the PCA (``pproc.*``): those keys are
    ignored (listed in ``key_report.ignored``), as AudioLDM's FAD does not use the PCA.
    """
    state = read_state_dict(source)
    model = VGGish(**arch)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    report = compare_keys(state, expected, ignore_prefixes=("pproc.",))
    require(report, source, "VGGish")
    model.load_state_dict({k: state[k] for k in expected})
    model.key_report = report
    return model.eval()


# ----------------------------------------------------------------------------------------------
# The extractor the metrics use

def weights_digest(*modules: nn.Module) -> str:
    """sha256 of the modules' state dicts (names and values): two sets of weights, two digests."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode() + b"\x1f")
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PannsVGGishExtractor(AudioFeatureExtractor):
    """FD/KID/KL/IS features from PANNs Cnn14, FAD frame features from VGGish (AudioLDM's suite).

    ``clip_embeddings``: (N, 2048) "2048" embeddings; ``logits``: (N, 527) pre-sigmoid logits;
    ``frame_embeddings``: one (n_i, 128) array per clip. Clips are 16-kHz float arrays of any length;
    PANNs runs clips of equal length together in batches of ``batch_size``. ``version`` is a digest
    of both networks' weights, so a :class:`~cinefoley.metrics.FeatureCache` never mixes checkpoints.
    """

    name = "panns-cnn14-16k+vggish"

    def __init__(self, panns: Cnn14, vggish: VGGish, *, device: str | torch.device | None = None,
                 batch_size: int = 16):
        if panns.sample_rate != self.sample_rate:
            raise ValueError(f"the Cnn14 runs at {panns.sample_rate} Hz; this extractor is for {self.sample_rate} Hz")
        self.device = torch.device(device) if device is not None else default_device()
        self.panns = panns.to(self.device).eval()
        self.vggish = vggish.to(self.device).eval()
        self.batch_size = batch_size
        self.version = weights_digest(panns, vggish)[:16]
        self._last: tuple[list[str], np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_files(cls, panns_path: str | Path, vggish_path: str | Path, **kwargs) -> PannsVGGishExtractor:
        """Load ``Cnn14_16k_mAP=0.438.pth`` and ``vggish-10086976.pth`` (key-checked) into an extractor."""
        return cls(load_panns(panns_path), load_vggish(vggish_path), **kwargs)

    @torch.no_grad()
    def _panns(self, wavs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # clip_embeddings and logits come from one pass: remember the last batch's outputs
        keys = [hashlib.sha256(np.ascontiguousarray(w, dtype="<f4").tobytes()).hexdigest() for w in wavs]
        if self._last is not None and self._last[0] == keys:
            return self._last[1], self._last[2]
        inputs = [panns_input(w) for w in wavs]
        embeddings = np.zeros((len(inputs), self.panns.embed_dim), np.float32)
        logits = np.zeros((len(inputs), self.panns.fc_audioset.out_features), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(x.size, []).append(i)
        for idx in by_length.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                batch = torch.from_numpy(np.stack([inputs[i] for i in chunk])).to(self.device)
                emb, log = self.panns(batch)
                embeddings[chunk], logits[chunk] = emb.float().cpu().numpy(), log.float().cpu().numpy()
        self._last = (keys, embeddings, logits)
        return embeddings, logits

    def clip_embeddings(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self._panns(wavs)[0]

    def logits(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self._panns(wavs)[1]

    @torch.no_grad()
    def frame_embeddings(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        examples = [vggish_examples(w) for w in wavs]
        if not examples:
            return []
        flat = torch.from_numpy(np.concatenate(examples))[:, None].to(self.device)
        out = torch.cat([self.vggish(flat[s:s + 64 * self.batch_size])
                         for s in range(0, len(flat), 64 * self.batch_size)]).float().cpu().numpy()
        return np.split(out, np.cumsum([len(e) for e in examples])[:-1])


# ----------------------------------------------------------------------------------------------
# Align Acc

@torch.no_grad()
def align_acc_probs(classifier: AlignmentClassifier, mels, video_feats, *, batch_size: int = 16,
                    seed: int = 0) -> np.ndarray:
    """P(aligned) (N,) of generated mels and their videos' CAVP features, as Diff-Foley's align_acc.py.

    ``mels`` (N, 128, ≥ 512) in [0, 1] and ``video_feats`` (N, ≥ 32, C), arrays or tensors: the first
    512 mel frames and 32 feature frames (8.192 s) are scored at t = 0 with a posterior *sample* of
    the classifier's VAE, drawn from one generator seeded with ``seed`` (align_acc.py fixes
    ``torch.manual_seed(0)``). :func:`cinefoley.metrics.align_acc` of the result is Align Acc.
    """
    mels, feats = torch.as_tensor(mels), torch.as_tensor(video_feats)
    if mels.dim() != 3 or mels.shape[-1] < ALIGN_MEL_FRAMES:
        raise ValueError(f"mels must be (N, 128, >= {ALIGN_MEL_FRAMES}), got {tuple(mels.shape)}")
    if feats.dim() != 3 or feats.shape[1] < ALIGN_VIDEO_FRAMES or len(feats) != len(mels):
        raise ValueError(f"video_feats must be (N={len(mels)}, >= {ALIGN_VIDEO_FRAMES}, C), got {tuple(feats.shape)}")
    device = next(classifier.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    probs = [classifier.align_prob(mels[s:s + batch_size, :, :ALIGN_MEL_FRAMES].to(device),
                                   feats[s:s + batch_size, :ALIGN_VIDEO_FRAMES].to(device), generator=generator)
             for s in range(0, len(mels), batch_size)]
    return torch.cat(probs).double().cpu().numpy()

