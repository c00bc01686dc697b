"""VGGish, AudioLDM's FAD network, from harritaylor/torchvggish's ``vggish-10086976.pth``.

Keys ``features.*``, ``embeddings.*``; AudioLDM's FAD settings: no PCA/quantisation and the last ReLU
removed, so one **128-d pre-ReLU vector per 0.96-s example**. Front end per VGGish's definition
(``mel_features.py``): 25-ms frames (400 samples) every 10 ms (160), periodic Hann, ``|rfft|`` over 512
points, 64 HTK-mel bands 125–7500 Hz (triangles linear in mel, DC bin dropped), ``log(mel + 0.01)``, cut
into non-overlapping 96-frame examples. Frames = 1 + ⌊(N − 400)/160⌋, examples = 1 + ⌊(frames − 96)/96⌋:
2 for 2 s, 8 for 8 s, 10 for 10 s. AudioLDM's FAD reads the files itself (no DC removal, no padding).

No architecture package fits: ``torchvggish`` downloads weights when its model is made and pulls in
resampy/numba.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from cinefoley.models.checkpoints import StateDictSource, compare_keys, read_state_dict, require

VGGISH_SAMPLE_RATE = 16000
VGGISH_WINDOW = 400  # 25 ms
VGGISH_HOP = 160  # 10 ms
VGGISH_FFT = 512  # the next power of two above the window
VGGISH_MELS = 64
VGGISH_FMIN, VGGISH_FMAX = 125.0, 7500.0
VGGISH_LOG_OFFSET = 0.01
VGGISH_EXAMPLE_FRAMES = 96  # 0.96 s of 10-ms frames; examples do not overlap



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
