"""CineToy's generator G: a small Diff-Foley-style latent diffusion model from diffusers parts (paper §3.4).

What is kept from Diff-Foley's LDM (``Stage2_LDM.yaml``):
- eps-prediction (Eq. 3) with the LDM schedule ``scaled_linear`` 0.00085 -> 0.012 over 1000 steps;
- a ``UNet2DConditionModel`` that cross-attends to the per-frame video features, one token per frame,
  after the conditioning embedder ``VideoFeatEmbedder`` (Linear 512 -> width + learned position
  embedding over 40 positions), trained jointly with the UNet (``cond_stage_trainable``);
- classifier-free guidance (Eq. 4) learnt by condition dropout p = 0.2, with the unconditional
  context = zeros *after* the embedder. Diff-Foley's training code zeroes the raw features before the
  embedder but its released sampler uses post-embedder zeros; here training uses post-embedder zeros
  too, so training and sampling agree (``context(feats, uncond=True)``).

What differs, and why: the first stage is not a trained KL autoencoder (minutes of 2-core CPU
training on its own, and it blurs the tones it must reconstruct) but a closed-form one,
:class:`cinefoley.models.cinetoy.first_stage.PatchPCA`: 8 x 8 mel patches projected on their 16 leading principal
components and scaled to unit std (LDM's ``scale_by_std``), fitted on the training mels by
``train_generator``. That gives the UNet a 16 x 16 x N/8 latent, like Diff-Foley's 4 x 16 x 64 latent of
a 128 x 512 mel, with fewer channels than the UNet is wide. And the features are centred and scaled
(``fit_feature_scale``) before the embedder: unit-norm toy features vary by ~0.02 per dimension, which
the embedder's position embedding would drown.

The sampler (:mod:`cinefoley.generate`) uses only ``unet``, ``context``, ``latent_geometry``,
``decode_latent`` and ``noise_schedule``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn

from cinefoley.progress import progress_bar
from cinefoley.models.conditioning import VideoFeatEmbedder
from cinefoley.models.cinetoy.first_stage import PatchPCA
from cinefoley.models.ldm import NOISE_SCHEDULE
from cinefoley.utils import seed_everything


@dataclass
class ToyLDMConfig:
    n_mels: int = 128
    mel_frames: int = 128            # 2.048 s at hop 256 / 16 kHz
    patch: int = 8                   # first stage: mel patch side ...
    latent_channels: int = 16        # ... and principal components kept per patch
    feat_dim: int = 512              # per-frame video feature (CAVP layout)
    max_frames: int = 40             # positions of the embedder (Diff-Foley: 40)
    block_out_channels: tuple[int, ...] = (64, 64, 64)
    layers_per_block: int = 1
    attention_heads: int = 4
    norm_num_groups: int = 16


class ToyLDM(nn.Module):
    """eps(z_t, t, c): ``unet`` + ``cond`` (Diff-Foley's cond_stage_model) on the ``first_stage`` latent."""

    config_class = ToyLDMConfig
    vae = None  # the first stage is ``first_stage`` (see the module docstring)

    def __init__(self, config: ToyLDMConfig | None = None):
        super().__init__()
        self.config = config = config or ToyLDMConfig()
        p, c = config.patch, config.latent_channels
        if config.n_mels % p or config.mel_frames % p:
            raise ValueError(f"patch {p} must divide the mel size {config.n_mels} x {config.mel_frames}")
        self.first_stage = PatchPCA(config.n_mels, p, c)
        width = config.block_out_channels[-1]
        depth = len(config.block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.n_mels // p, in_channels=c, out_channels=c,
            down_block_types=("CrossAttnDownBlock2D",) * (depth - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (depth - 1),
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            cross_attention_dim=width, attention_head_dim=config.attention_heads,
            norm_num_groups=config.norm_num_groups)
        self.cond = VideoFeatEmbedder(config.feat_dim, width, config.max_frames)
        self.noise_schedule = dict(NOISE_SCHEDULE)
        self.register_buffer("feat_mean", torch.zeros(config.feat_dim))
        self.register_buffer("feat_std", torch.ones(config.feat_dim))

    @torch.no_grad()
    def fit_feature_scale(self, feats: torch.Tensor) -> None:
        """Centre the training features (N, T, feat_dim) per dimension and scale them to unit variance with
        one scale for all dimensions (a per-dimension scale would magnify the directions the teacher hardly
        uses, where a student's features stray); applied before the embedder."""
        flat = feats.float().reshape(-1, feats.shape[-1])
        self.feat_mean.copy_(flat.mean(0))
        self.feat_std.fill_(flat.var(0).mean().sqrt().clamp_min(1e-6).item())

    @property
    def latent_geometry(self) -> tuple[int, int]:
        """(latent height, latent columns per video frame of 16 mel frames)."""
        p = self.config.patch
        return self.config.n_mels // p, 16 // p

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        p = self.config.patch
        return (self.config.latent_channels, self.config.n_mels // p, self.config.mel_frames // p)

    def context(self, feats: torch.Tensor, uncond: bool = False) -> torch.Tensor:
        """Cross-attention context (B, T, width) of features (B, T, 512); ``uncond``: zeros after the embedder."""
        emb = self.cond((feats.float() - self.feat_mean) / self.feat_std)
        return torch.zeros_like(emb) if uncond else emb

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel (B, 128, N) in [0, 1] -> z (B, latent_channels, 128/p, N/p) of unit std."""
        return self.first_stage.encode(mel)

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, 128/p, N/p) -> mel (B, 128, N), clipped to [0, 1]."""
        return self.first_stage.decode(z)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The predicted noise eps(z_t, t, c)."""
        return self.unet(z_t, t, encoder_hidden_states=context).sample


@dataclass
class GeneratorTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3                 # 3e-3 learnt the condition faster than 1e-3 on CineToy (see notes)
    warmup_steps: int = 50
    weight_decay: float = 0.01
    cond_drop_prob: float = 0.2      # Diff-Foley's CFG dropout
    seed: int = 0
    device: str = "cpu"


def diffusion_loss(model: ToyLDM, z0: torch.Tensor, context: torch.Tensor, scheduler: DDPMScheduler,
                   gen: torch.Generator) -> torch.Tensor:
    """Eq. 3: || eps - eps_theta(z_t, t, c) ||^2 with t ~ U{0..999} and z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps."""
    noise = torch.randn(z0.shape, generator=gen).to(z0.device)
    t = torch.randint(scheduler.config.num_train_timesteps, (len(z0),), generator=gen).to(z0.device)
    return F.mse_loss(model(scheduler.add_noise(z0, noise, t), t, context), noise)


def train_generator(model: ToyLDM, feats: torch.Tensor, mels: torch.Tensor,
                    cfg: GeneratorTrainConfig | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Train ``model`` on teacher features of full-frame clips (N, T, 512) and their mels (N, 128, 16 T).

    First fits the first stage on ``mels`` (``PatchPCA.fit``) and the feature standardisation on ``feats``. Returns
    ``{"loss": [...]}``, the training loss of every step. The model is left in eval mode.
    """
    cfg = cfg or GeneratorTrainConfig()
    if len(feats) != len(mels):
        raise ValueError(f"{len(feats)} feature clips but {len(mels)} mels")
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    scheduler = DDPMScheduler(**model.noise_schedule)
    model.first_stage.fit(mels)
    model.fit_feature_scale(feats)
    model.to(cfg.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    history: dict[str, list[float]] = {"loss": []}
    order = torch.empty(0, dtype=torch.long)
    for _ in progress_bar(range(cfg.steps), desc="train generator", disable=not progress):
        if len(order) < cfg.batch_size:
            order = torch.cat([order, torch.randperm(len(mels), generator=gen)])
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        context = model.context(feats[idx].to(cfg.device))
        keep = (torch.rand(len(idx), generator=gen) >= cfg.cond_drop_prob).to(context)
        loss = diffusion_loss(model, model.encode_mel(mels[idx].to(cfg.device)),
                              context * keep[:, None, None], scheduler, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(loss.item())
    model.eval()
    return history
