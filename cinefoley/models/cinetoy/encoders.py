"""CineToy's small stand-in for CAVP, the video encoder E of Diff-Foley (paper §3.1: c = E(x_v)).

``ToyVideoEncoder`` mirrors the layout of CAVP's SlowOnly ResNet3D: per-frame 2-D convolutions in the
early stages, an inflated (3, 1, 1) temporal convolution before each of the last two stages (CAVP's
layer3/layer4), a spatial mean, and a per-frame Linear head to 512 — so T is never downsampled and the
output is one L2-normalised 512-d feature per frame, ``(B, T, 512)``. Frames are squash-resized to the
input size with no mean/std normalisation, as CAVP does at 224 px. GroupNorm replaces CAVP's BatchNorm:
it has no running statistics, so the student of the self-distillation (trained in train mode from the
teacher's weights) and the frozen teacher compute features the same way.

``ToyAudioEncoder`` mirrors CAVP's Cnn14 branch at toy size: a mel (B, 128, 16 T) becomes one
L2-normalised 512-d feature per 16 mel frames, i.e. per video frame at 4 fps.

Both are plain eager modules (Grad-CAM hooks fire); ``ToyVideoEncoder.cam_layer`` is the last conv
stage, whose activations are per frame, ``(B*T, C, h, w)``; ``cam_reshape(T)`` folds them to
``(B, C, T, h, w)`` for pytorch-grad-cam's 3-D path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(8, c_out), nn.ReLU())


def mel_trunk(widths: tuple[int, ...]) -> nn.Sequential:
    """Conv blocks over a mel image (B, 1, mels, frames), each halving both axes (Cnn14's ConvBlock + 2x2 avg pool).

    GroupNorm instead of Cnn14's BatchNorm: no running statistics, so a model trained for a few
    hundred steps behaves the same in train and eval mode; it normalises over the whole input, so every
    output step also sees the input's overall level.
    """
    blocks, c_in = [], 1
    for c_out in widths:
        blocks += [*_conv_block(c_in, c_out, stride=1), nn.AvgPool2d(2)]
        c_in = c_out
    return nn.Sequential(*blocks)


class TemporalConv(nn.Module):
    """CAVP's inflated (3, 1, 1) convolution, residual: each frame mixes with its two neighbours.

    Normalisation is per frame (GroupNorm on (B*T, C, h, w)), so nothing else crosses frames.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.norm = nn.GroupNorm(8, channels)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        clip = x.reshape(bt // num_frames, num_frames, c, h, w).transpose(1, 2)
        mixed = self.conv(clip).transpose(1, 2).reshape(bt, c, h, w)
        return x + F.relu(self.norm(mixed))


@dataclass
class ToyVideoEncoderConfig:
    input_size: int = 64
    widths: tuple[int, int, int, int] = (24, 48, 96, 128)
    embed_dim: int = 512


class ToyVideoEncoder(nn.Module):
    """Video (B, T, 3, H, W), uint8 or float in [0, 1] -> per-frame features c (B, T, 512), unit norm."""

    config_class = ToyVideoEncoderConfig

    def __init__(self, config: ToyVideoEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or ToyVideoEncoderConfig()
        w1, w2, w3, w4 = config.widths
        self.layer1 = _conv_block(3, w1, stride=2)
        self.layer2 = _conv_block(w1, w2, stride=2)
        self.temporal3 = TemporalConv(w2)
        self.layer3 = _conv_block(w2, w3, stride=2)
        self.temporal4 = TemporalConv(w3)
        self.layer4 = _conv_block(w3, w4, stride=1)
        self.head = nn.Linear(w4, config.embed_dim)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional stage (Grad-CAM target); its output is ``(B*T, C, h, w)``."""
        return self.layer4

    @staticmethod
    def cam_reshape(num_frames: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """A pytorch-grad-cam ``reshape_transform``: ``(B*T, C, h, w)`` -> ``(B, C, T, h, w)``."""
        def fold(a: torch.Tensor) -> torch.Tensor:
            bt, c, h, w = a.shape
            return a.reshape(bt // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
        return fold

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) uint8/float -> float frames (B*T, 3, S, S) in [0, 1], squash-resized."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"expected a video batch (B, T, 3, H, W), got shape {tuple(video.shape)}")
        frames = video.flatten(0, 1)
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        size = self.config.input_size
        if frames.shape[-2:] != (size, size):
            frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True)
        return frames

    def frame_embeddings(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame projections before L2 normalisation, (B, T, 512) (pooled for CAVP's clip embedding)."""
        b, t = video.shape[:2]
        x = self.layer2(self.layer1(self.prepare(video)))
        x = self.layer3(self.temporal3(x, t))
        x = self.layer4(self.temporal4(x, t))
        return self.head(x.mean(dim=(2, 3)).reshape(b, t, -1))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.frame_embeddings(video), dim=-1)


@dataclass
class ToyAudioEncoderConfig:
    n_mels: int = 128
    mel_frames_per_frame: int = 16
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    embed_dim: int = 512


class ToyAudioEncoder(nn.Module):
    """Mel (B, 128, 16 T) in [0, 1] -> per-frame audio features (B, T, 512), unit norm.

    Four conv blocks, each halving mel and time, take 16 mel frames to one step (the video's 4 fps);
    a per-frame Linear head maps the remaining (channels x mel bands) to 512. Unlike Cnn14, the mel axis
    is flattened rather than averaged: a mean over mel would leave the small convolutions no way to
    tell two sounds that differ only in pitch.
    """

    config_class = ToyAudioEncoderConfig

    def __init__(self, config: ToyAudioEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or ToyAudioEncoderConfig()
        if config.mel_frames_per_frame != 2 ** len(config.widths) or config.n_mels % config.mel_frames_per_frame:
            raise ValueError("mel_frames_per_frame must be 2 ** (number of conv blocks) and divide n_mels")
        self.trunk = mel_trunk(config.widths)
        self.head = nn.Linear(config.widths[-1] * (config.n_mels // config.mel_frames_per_frame),
                              config.embed_dim)

    def frame_embeddings(self, mel: torch.Tensor) -> torch.Tensor:
        """Per-frame projections before L2 normalisation, (B, T, 512)."""
        hop = self.config.mel_frames_per_frame
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels or mel.shape[2] % hop:
            raise ValueError(f"expected a mel batch (B, {self.config.n_mels}, {hop}*T), "
                             f"got shape {tuple(mel.shape)}")
        x = self.trunk(mel.float().unsqueeze(1))          # (B, C, mels/16, T)
        return self.head(x.flatten(1, 2).transpose(1, 2))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.frame_embeddings(mel), dim=-1)
