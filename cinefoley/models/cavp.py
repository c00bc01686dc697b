"""CAVP's video encoder (Diff-Foley Stage 1), loadable from the released ``cavp_epoch66.ckpt``.

The encoder E that gives the LDM its per-frame video features: an mmaction2 SlowOnly ResNet3D-50
(Bottleneck3d blocks 3, 4, 6, 3; stem conv (1, 7, 7) stride (1, 2, 2) + BN + ReLU, max-pool (1, 3, 3)
stride (1, 2, 2); spatial strides 1, 2, 2, 2; no temporal stride anywhere; layer3/layer4 inflated with
the '3x1x1' style, so their conv1 is (3, 1, 1); no pool2), a spatial average pool, then
``video_project_head`` (Linear 2048 -> 512) per frame and L2 normalisation: (B, T, 512) at 4 fps.

The modules are named so that ``state_dict()`` keys are the checkpoint's (mmcv ``ConvModule`` layout:
``<name>.conv.weight``, ``<name>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``), e.g.
``video_encoder.layer3.0.conv1.conv.weight`` of shape (256, 1024, 3, 1, 1). No mmcv is needed.

Input as in Diff-Foley's ``Extract_CAVP_Features``: frames squash-resized to 224x224, range [0, 1], no
mean/std normalisation, pushed through the network in chunks of 40 frames. The temporal convolutions
see only the frames of their chunk, so the chunking changes the features near chunk boundaries; it is
reproduced here on purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.functional import resize

from cinefoley.models.checkpoints import (KeyReport, StateDictSource, compare_keys, read_state_dict, require,
                                          source_name)
from cinefoley.variations import VariationParams

log = logging.getLogger("cinefoley")

#: Frames per forward pass in Diff-Foley's feature extraction ("batch_size = 40 # Don't change it").
CHUNK_FRAMES = 40
INPUT_SIZE = 224
#: Keys of CAVP's audio branch, present in the released file but not used for video features.
AUDIO_BRANCH_PREFIXES = ("spec_encoder.", "spec_project_head.", "logit_scale")


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` as SlowOnly uses it: Conv3d without bias, BatchNorm3d, optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
                 padding: tuple[int, int, int] = (0, 0, 0), relu: bool = True):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x, inplace=True) if self.relu else x


class Bottleneck3d(nn.Module):
    """mmaction's Bottleneck3d, 'pytorch' style (the spatial stride sits on conv2)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, inflate: bool = False,
                 downsample: ConvModule | None = None):
        super().__init__()
        # '3x1x1' inflation: a temporal kernel of 3 on conv1 only; conv2 stays (1, 3, 3)
        t = 3 if inflate else 1
        self.conv1 = ConvModule(inplanes, planes, (t, 1, 1), padding=(t // 2, 0, 0))
        self.conv2 = ConvModule(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                                padding=(0, 1, 1))
        self.conv3 = ConvModule(planes, planes * self.expansion, (1, 1, 1), relu=False)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity, inplace=True)


class SlowOnlyResNet3d(nn.Module):
    """SlowOnly ResNet3D (mmaction ``ResNet3dSlowOnly``); ``stage_blocks=(3, 4, 6, 3)`` is depth 50.

    ``forward``: (B, 3, T, H, W) -> (B, feat_dim, T), averaged over space; ``feat_dim`` = 32·base_channels.
    """

    spatial_strides = (1, 2, 2, 2)
    inflate = (False, False, True, True)

    def __init__(self, stage_blocks: tuple[int, ...] = (3, 4, 6, 3), base_channels: int = 64):
        super().__init__()
        if len(stage_blocks) != 4:
            raise ValueError(f"SlowOnly has 4 stages, got stage_blocks={stage_blocks}")
        self.conv1 = ConvModule(3, base_channels, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = base_channels
        for i, n_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            stride = self.spatial_strides[i]
            downsample = None
            if stride != 1 or inplanes != planes * Bottleneck3d.expansion:
                downsample = ConvModule(inplanes, planes * Bottleneck3d.expansion, (1, 1, 1),
                                        stride=(1, stride, stride), relu=False)
            blocks = [Bottleneck3d(inplanes, planes, stride, self.inflate[i], downsample)]
            inplanes = planes * Bottleneck3d.expansion
            blocks += [Bottleneck3d(inplanes, planes, 1, self.inflate[i]) for _ in range(1, n_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.feat_dim = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(3, 4))


class CAVPVideoEncoder(nn.Module):
    """CAVP's video branch: SlowOnly + ``video_project_head``; per-frame, L2-normalised 512-d features."""

    def __init__(self, stage_blocks: tuple[int, ...] = (3, 4, 6, 3), base_channels: int = 64,
                 embed_dim: int = 512):
        super().__init__()
        self.video_encoder = SlowOnlyResNet3d(stage_blocks, base_channels)
        self.video_project_head = nn.Linear(self.video_encoder.feat_dim, embed_dim)
        self.key_report: KeyReport | None = None

    @property
    def cam_layer(self) -> nn.Module:
        """SlowOnly's last stage, (B, 2048, T, 7, 7) at 224 px: Grad-CAM's target layer (Figure 6)."""
        return self.video_encoder.layer4

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Diff-Foley's ``encode_video(normalize=True, pool=False)``: (B, T, 3, H, W) in [0, 1] -> (B, T, 512)."""
        feat = self.video_encoder(video.permute(0, 2, 1, 3, 4)).transpose(1, 2)
        return F.normalize(self.video_project_head(feat), dim=-1)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, *, chunk: int = CHUNK_FRAMES, size: int = INPUT_SIZE) -> torch.Tensor:
        """Features of 4-fps frames (T, 3, H, W) or (B, T, 3, H, W), uint8 or float in [0, 1].

        Frames are squash-resized to ``size`` x ``size`` and encoded ``chunk`` frames at a time, as
        Diff-Foley extracts them. Returns (T, 512) or (B, T, 512).
        """
        single = frames.dim() == 4
        video = frames[None] if single else frames
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"expected frames (T, 3, H, W) or (B, T, 3, H, W), got {tuple(frames.shape)}")
        video = squash_resize(video, size)
        video = video.float() / 255.0 if video.dtype == torch.uint8 else video.float()
        t = video.shape[1]
        param = next(self.parameters())
        feats = [self(video[:, s:s + chunk].to(param.device, param.dtype)) for s in range(0, t, chunk)]
        out = torch.cat(feats, dim=1)
        return out[0] if single else out


def squash_resize(frames: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Frames (..., 3, H, W) squash-resized to (..., 3, size, size), CAVP's input (aspect ratio not kept).

    uint8 frames are resized in uint8, like PIL's resize in Diff-Foley, and stay uint8.
    """
    lead = frames.shape[:-3]
    flat = frames.reshape(-1, *frames.shape[-3:])
    return resize(flat, [size, size], antialias=True).reshape(*lead, flat.shape[1], size, size)


def varied_input(frames: torch.Tensor, params: VariationParams | None, size: int = INPUT_SIZE) -> torch.Tensor:
    """CAVP's input of a clip seen through a variation f: ``squash_resize(apply(frames, params), size)``.

    The recipe crops each frame's window at the video's own resolution, resizes it back to the frame
    size (:func:`cinefoley.variations.apply`, float, rounded to uint8), then CAVP squash-resizes to 224.
    Here both resizes run on uint8 channels-last frames, PyTorch's fixed-point kernels: the same pixels
    to 2 grey levels (mean 0.3 on pixel noise, 0.2 on 360p video), 20x faster at 360p than the float path. On a GPU they run in float,
    rounded after each resize as the recipe does. ``params = None`` is :func:`squash_resize` itself, so
    the originals' features (the teacher's c_t) are unchanged. uint8 (T, 3, H, W) in, (T, 3, size, size) out.
    """
    if params is None:
        return squash_resize(frames, size)
    t, _, h, w = frames.shape
    if (params.n_frames, params.height, params.width) != (t, h, w):
        raise ValueError(f"params are for a clip of {params.n_frames}×{params.height}×{params.width}, "
                         f"frames are {t}×{h}×{w}; use params.for_shape(...)")
    ch, cw = params.boxes[0][2:]  # f_cu and f_cm keep one window size over the clip
    x = torch.stack([frame[:, top:top + ch, left:left + cw] for frame, (top, left, _, _) in zip(frames, params.boxes)])
    on_cpu = x.device.type == "cpu"
    x = x.contiguous(memory_format=torch.channels_last) if on_cpu else x.float()
    for out in ((h, w), (size, size)):
        # antialias=True selects the separable uint8 kernel; growing the crop, it is plain bilinear
        x = F.interpolate(x, size=out, mode="bilinear", align_corners=False, antialias=True)
        x = x if on_cpu else x.round().clamp(0, 255)
    return x.to(torch.uint8).contiguous()


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP's leading ``module.`` from each key.

    Diff-Foley's loader uses ``key.replace("module.", "")``, which also deletes the substring inside a
    key. No key of this model contains it, so both agree on valid files; here an inner ``module.`` is
    left alone and then reported as an unexpected key instead of being silently renamed.
    """
    out = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def load_cavp(source: StateDictSource, *, allow_audio_branch: bool = True,
              stage_blocks: tuple[int, ...] = (3, 4, 6, 3), base_channels: int = 64,
              embed_dim: int = 512) -> CAVPVideoEncoder:
    """A :class:`CAVPVideoEncoder` (in eval mode) from a ``cavp_epoch66.ckpt``-format file or state dict.

    Every key must be used: missing, unexpected or mis-shaped keys raise
    :class:`~cinefoley.models.checkpoints.KeyMismatchError` naming the file. The released file also holds the
    audio branch (``spec_encoder.*``, ``spec_project_head.*``, ``logit_scale``), which the video features do
    not use: by default those keys are ignored, listed in ``model.key_report.ignored`` and reported once
    on the ``cinefoley`` logger; ``allow_audio_branch=False`` refuses them (a video-only file, e.g. a
    student written by the distillation, has none).
    """
    state = strip_module_prefix(read_state_dict(source))
    model = CAVPVideoEncoder(stage_blocks, base_channels, embed_dim)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    report = compare_keys(state, expected, ignore_prefixes=AUDIO_BRANCH_PREFIXES if allow_audio_branch else ())
    require(report, source, "CAVP's video encoder")
    model.load_state_dict({k: state[k] for k in expected})
    model.key_report = report
    if report.ignored:
        log.info("%s: loaded CAVP's video encoder (%d tensors); ignored %d keys of its audio branch (%s)",
                 source_name(source), report.used, len(report.ignored), ", ".join(sorted(
                     {k.split(".")[0] for k in report.ignored})))
    return model.eval()
