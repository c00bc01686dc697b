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

What differs, and why:
- the first stage is not a trained KL autoencoder (minutes of 2-core CPU training on its own, and it
  blurs the tones it must reconstruct) but a closed-form one,
  :class:`cinefoley.models.cinetoy.first_stage.PatchPCA`: 64 x 4 mel patches (64 mel bands x 64 ms)
  projected on their 8 leading principal components and scaled to unit std (LDM's ``scale_by_std``),
  fitted on the training mels by ``train_generator``. A 2.048-s clip becomes an 8 x 2 x 32 latent, four
  latent columns per video frame, so an onset lands within 64 ms.
- cross-attention is frame-local (:class:`FrameLocalCrossAttnProcessor`): each latent column's attention
  logits get ``frame_bias`` added for the video frame it lies under. Diff-Foley learns where in time
  to look from millions of steps on VGGSound; a CPU-sized UNet trained for minutes on 600 clips does not,
  and with plain cross-attention its sound followed the class but not the timing. The bias is a prior,
  not a mask: every column still sees every frame.
- the features are centred and scaled (``fit_feature_scale``) before the embedder: unit-norm toy
  features vary by ~0.02 per dimension, which the embedder's position embedding would drown.

The sampler (:mod:`cinefoley.generate`) uses only ``unet``, ``context``, ``latent_geometry``,
``decode_latent`` and ``noise_schedule``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

from cinefoley.progress import progress_bar
from cinefoley.models.conditioning import VideoFeatEmbedder
from cinefoley.models.cinetoy.first_stage import PatchPCA, patch_size
from cinefoley.models.ldm import NOISE_SCHEDULE
from cinefoley.utils import seed_everything


@dataclass
class ToyLDMConfig:
    n_mels: int = 128
    mel_frames: int = 128            # 2.048 s at hop 256 / 16 kHz
    patch: tuple[int, int] = (64, 4)  # first stage: (mel bands, mel frames) of a patch ...
    latent_channels: int = 8          # ... and principal components kept per patch
    feat_dim: int = 512               # per-frame video feature (CAVP layout)
    max_frames: int = 40              # positions of the embedder (Diff-Foley: 40)
    block_out_channels: tuple[int, ...] = (64, 96)
    layers_per_block: int = 1
    attention_heads: int = 4
    norm_num_groups: int = 16
    frame_bias: float = 4.0           # added to a latent column's attention logit for its own frame; 0 = plain


MEL_FRAMES_PER_VIDEO_FRAME = 16  # 4 fps video, 16-kHz audio at hop 256


class FrameLocalCrossAttnProcessor(AttnProcessor2_0):
    """diffusers' scaled-dot-product attention, with ``frame_bias`` added to the logit of the video frame
    that each latent column lies under (cross-attention only; self-attention is unchanged).

    The UNet flattens a (h, w) latent level row by row, so query q sits in column q mod w; with T frame
    tokens, column c of w lies under frame floor(c T / w). The level's (h, w) is found from the query count:
    h = ceil(latent_height / 2^l), w = ceil(T * columns_per_frame / 2^l) (diffusers' stride-2 downsampling).
    """

    def __init__(self, latent_height: int, columns_per_frame: int, frame_bias: float):
        super().__init__()
        self.latent_height, self.columns_per_frame, self.frame_bias = latent_height, columns_per_frame, frame_bias

    def level_width(self, n_queries: int, n_frames: int) -> int:
        h, w = self.latent_height, self.columns_per_frame * n_frames
        while h * w != n_queries:
            if h == w == 1:
                raise ValueError(f"{n_queries} queries fit no level of a {self.latent_height} x "
                                 f"{self.columns_per_frame * n_frames} latent")
            h, w = -(-h // 2), -(-w // 2)
        return w

    def bias(self, n_queries: int, n_frames: int, like: torch.Tensor) -> torch.Tensor:
        """(n_queries, n_frames): ``frame_bias`` where the query's column lies under the frame, else 0."""
        w = self.level_width(n_queries, n_frames)
        frame = torch.arange(n_queries, device=like.device) % w * n_frames // w
        own = frame[:, None] == torch.arange(n_frames, device=like.device)[None]
        return own.to(like.dtype) * self.frame_bias

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None:
            bias = self.bias(hidden_states.shape[1], encoder_hidden_states.shape[1], hidden_states)
            attention_mask = bias.expand(len(hidden_states), -1, -1)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


class ToyLDM(nn.Module):
    """eps(z_t, t, c): ``unet`` + ``cond`` (Diff-Foley's cond_stage_model) on the ``first_stage`` latent."""

    config_class = ToyLDMConfig
    vae = None  # the first stage is ``first_stage`` (see the module docstring)

    def __init__(self, config: ToyLDMConfig | None = None):
        super().__init__()
        self.config = config = config or ToyLDMConfig()
        (bands, frames), c = patch_size(config.patch), config.latent_channels
        if config.n_mels % bands or config.mel_frames % frames or MEL_FRAMES_PER_VIDEO_FRAME % frames:
            raise ValueError(f"patch {bands} x {frames} must divide the mel size {config.n_mels} x "
                             f"{config.mel_frames} and a video frame's {MEL_FRAMES_PER_VIDEO_FRAME} mel frames")
        self.first_stage = PatchPCA(config.n_mels, (bands, frames), c)
        width = config.block_out_channels[-1]
        depth = len(config.block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=config.n_mels // bands, in_channels=c, out_channels=c,
            down_block_types=("CrossAttnDownBlock2D",) * (depth - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (depth - 1),
            block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
            cross_attention_dim=width, attention_head_dim=config.attention_heads,
            norm_num_groups=config.norm_num_groups)
        if config.frame_bias:
            local = FrameLocalCrossAttnProcessor(*self.latent_geometry, config.frame_bias)
            self.unet.set_attn_processor({name: local if ".attn2." in name else AttnProcessor2_0()
                                          for name in self.unet.attn_processors})
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
        bands, frames = patch_size(self.config.patch)
        return self.config.n_mels // bands, MEL_FRAMES_PER_VIDEO_FRAME // frames

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        bands, frames = patch_size(self.config.patch)
        return (self.config.latent_channels, self.config.n_mels // bands, self.config.mel_frames // frames)

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
    steps: int = 3000
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
