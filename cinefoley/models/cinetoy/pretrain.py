"""CineToy's stage 1: CAVP-style contrastive audio-visual pretraining of the teacher T.

Diff-Foley's CAVP (``ClipLoss_Intra_Contrast``) draws 3 sub-clips of 4 s, starting >= 2 s apart, from
each 10-s video and trains on two symmetric CLIP cross-entropies over max-pooled, L2-normalised clip
embeddings with a learnable logit scale (init log(1/0.07), clamped to [0, log 100]):

- semantic ("extra") contrast: every sub-clip against every sub-clip of the batch;
- temporal ("intra") contrast: inside each video's S x S block only (same video, different times).

Here the video is a whole CineToy clip (8 frames at 4 fps) and its sub-clips are ``num_windows``
windows of ``window`` frames whose starts are at least ``min_offset`` frames apart. The encoders run
once on the full clip and each window max-pools its frames' projections (CAVP max-pools too; the
temporal convolutions therefore see the neighbouring frames at window edges). Training uses full
frames only: the teacher never sees a close-up or a camera move.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cinefoley.progress import progress_bar
from cinefoley.models.cinetoy.encoders import (ToyAudioEncoder, ToyAudioEncoderConfig, ToyVideoEncoder,
                                    ToyVideoEncoderConfig)
from cinefoley.utils import seed_everything


@dataclass
class PretrainConfig:
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    window: int = 4               # frames per sub-clip (CAVP: 16 frames = 4 s)
    num_windows: int = 2          # sub-clips per clip (CAVP: 3)
    min_offset: int = 2           # frames between sub-clip starts (CAVP: 8 frames = 2 s)
    temporal_weight: float = 1.0  # CAVP's intra_contrast_weight
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)
    seed: int = 0
    device: str = "cpu"
    video: ToyVideoEncoderConfig = field(default_factory=ToyVideoEncoderConfig)
    audio: ToyAudioEncoderConfig = field(default_factory=ToyAudioEncoderConfig)


def window_starts(num_frames: int, window: int, num_windows: int, min_offset: int) -> torch.Tensor:
    """Every admissible set of sub-clip starts, (K, num_windows), sorted, pairwise >= min_offset apart."""
    combos = [c for c in itertools.combinations(range(num_frames - window + 1), num_windows)
              if all(b - a >= min_offset for a, b in zip(c, c[1:]))]
    if not combos:
        raise ValueError(f"no {num_windows} windows of {window} frames fit in {num_frames} frames "
                         f"with starts {min_offset} frames apart")
    return torch.tensor(combos)


def window_embeddings(frame_emb: torch.Tensor, starts: torch.Tensor, window: int) -> torch.Tensor:
    """Max-pool per-frame projections (B, T, D) over windows starting at ``starts`` (B, S); L2-normalise.

    Returns (B, S, D): CAVP's clip embedding (MaxPool1d over the clip's frames, then normalise).
    """
    b, s = starts.shape
    frames = starts[..., None] + torch.arange(window, device=starts.device)        # (B, S, window)
    picked = frame_emb[torch.arange(b, device=starts.device)[:, None, None], frames]  # (B, S, window, D)
    return F.normalize(picked.amax(dim=2), dim=-1)


def semantic_contrast(video: torch.Tensor, audio: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CAVP's "extra" contrast: symmetric CLIP cross-entropy over (M, D) unit embeddings, pairs on the diagonal."""
    logits = logit_scale.exp() * video @ audio.T
    target = torch.arange(len(video), device=video.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def temporal_contrast(video: torch.Tensor, audio: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CAVP's "intra" contrast: symmetric cross-entropy inside each clip's S x S block, (B, S, D) inputs."""
    b, s, _ = video.shape
    logits = logit_scale.exp() * video @ audio.transpose(1, 2)                  # (B, S, S)
    target = torch.arange(s, device=video.device).repeat(b)
    return (F.cross_entropy(logits.reshape(b * s, s), target)
            + F.cross_entropy(logits.transpose(1, 2).reshape(b * s, s), target)) / 2


class ContrastivePair(nn.Module):
    """The two CAVP towers and their shared logit scale."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.video = ToyVideoEncoder(cfg.video)
        self.audio = ToyAudioEncoder(cfg.audio)
        self.logit_scale = nn.Parameter(torch.tensor(cfg.init_logit_scale))

    def losses(self, videos: torch.Tensor, mels: torch.Tensor, starts: torch.Tensor,
               window: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = window_embeddings(self.video.frame_embeddings(videos), starts, window)
        a = window_embeddings(self.audio.frame_embeddings(mels), starts, window)
        return (semantic_contrast(v.flatten(0, 1), a.flatten(0, 1), self.logit_scale),
                temporal_contrast(v, a, self.logit_scale))


def pretrain(videos: torch.Tensor, mels: torch.Tensor, cfg: PretrainConfig | None = None,
             progress: bool = True) -> tuple[ToyVideoEncoder, ToyAudioEncoder, dict[str, list[float]]]:
    """Train the toy teacher on full-frame clips: videos uint8 (N, T, 3, H, W), mels (N, 128, 16 T).

    Returns the video encoder (the teacher T, in eval mode), the audio encoder and a per-epoch history
    of ``loss``, ``semantic``, ``temporal`` and ``logit_scale``.
    """
    cfg = cfg or PretrainConfig()
    if len(videos) != len(mels):
        raise ValueError(f"{len(videos)} videos but {len(mels)} mels")
    if mels.shape[-1] != cfg.audio.mel_frames_per_frame * videos.shape[1]:
        raise ValueError(f"mels have {mels.shape[-1]} frames; {videos.shape[1]} video frames need "
                         f"{cfg.audio.mel_frames_per_frame * videos.shape[1]}")
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    combos = window_starts(videos.shape[1], cfg.window, cfg.num_windows, cfg.min_offset)
    model = ContrastivePair(cfg).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(videos) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
                                              * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    history: dict[str, list[float]] = {"loss": [], "semantic": [], "temporal": [], "logit_scale": []}
    bar = progress_bar(total=total, desc="pretrain teacher", disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        sums = torch.zeros(3)
        order = torch.randperm(len(videos), generator=gen)
        for idx in order.split(cfg.batch_size):
            starts = combos[torch.randint(len(combos), (len(idx),), generator=gen)].to(cfg.device)
            sem, tem = model.losses(videos[idx].to(cfg.device), mels[idx].to(cfg.device), starts, cfg.window)
            loss = sem + cfg.temporal_weight * tem
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, cfg.max_logit_scale)
            sums += torch.tensor([loss.item(), sem.item(), tem.item()]) * len(idx)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        for key, value in zip(("loss", "semantic", "temporal"), (sums / len(videos)).tolist()):
            history[key].append(value)
        history["logit_scale"].append(model.logit_scale.exp().item())
    bar.close()
    return model.video.eval(), model.audio.eval(), history
