"""Generation: features -> LDM with classifier-free guidance -> mel -> Griffin-Lim -> 16 kHz audio.

As Diff-Foley samples (paper §3.4, Eq. 4): eps = w·eps(z_t, c) + (1 − w)·eps(z_t, ∅) with w = 4.5,
the conditional and unconditional halves in one batched UNet call; DPM-Solver++(2M) with 25 steps
through diffusers' ``DPMSolverMultistepScheduler`` configured like Diff-Foley's sampler
(time-uniform steps ending at t = 1/N: ``timestep_spacing="linspace"``,
``final_sigmas_type="sigma_min"``). The initial noise of every (clip, sample) comes from its own
seed, so any subset of a run regenerates the same audio.

A model is anything with ``unet`` (diffusers ``UNet2DConditionModel``), ``context(feats, uncond)``,
``decode_latent(z)`` and ``noise_schedule`` (the DDPM settings) — CineToy's generator and the real
Diff-Foley LDM (:mod:`cinefoley.models.ldm`) both are.

:func:`generate_set` writes a whole test set in shards (``shard_00000.npz`` … holding the clip
ids, sample indices, mels as float16 and waveforms as 16-bit PCM of a fixed group of clips). A shard is written atomically
once complete, and a rerun skips the shards that exist, so a killed run resumes with neither
duplicates nor half-written files. Under ``torchrun`` rank r writes shards r, r + W, …; a shard's
sounds depend on its clips and their seeds alone, so any number of ranks writes the same shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from cinefoley.distributed import barrier, gather, my_share, rank_world
from cinefoley.media.audio import from_pcm16, to_pcm16
from cinefoley.progress import progress_bar
from cinefoley.media.vocoder import GriffinLimVocoder
from cinefoley.utils import atomic_savez, stable_hash, write_run_record

GUIDANCE = 4.5
STEPS = 25


def dpm_solver(noise_schedule: dict, steps: int = STEPS) -> DPMSolverMultistepScheduler:
    """DPM-Solver++(2M) set up like Diff-Foley's sampler (reference/ecosystem.md §5)."""
    sch = DPMSolverMultistepScheduler(**noise_schedule, algorithm_type="dpmsolver++", solver_order=2,
                                      solver_type="midpoint", timestep_spacing="linspace",
                                      final_sigmas_type="sigma_min", lower_order_final=True)
    sch.set_timesteps(steps)
    return sch


def initial_noise(shape: tuple[int, ...], seeds: list[int]) -> torch.Tensor:
    """One latent of ``shape`` per seed, drawn on the CPU so every device starts from the same noise."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def sample_latents(model, feats: torch.Tensor, noise: torch.Tensor, *, guidance: float = GUIDANCE,
                   steps: int = STEPS, batched_cfg: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Denoise ``noise`` (B, C, h, w) conditioned on ``feats`` (B, T, 512) with CFG weight ``guidance``.

    ``batched_cfg=False`` is the naive reference: separate conditional and unconditional calls.
    ``dtype`` (e.g. torch.bfloat16 on a GPU) runs the UNet under autocast.
    """
    device = next(model.unet.parameters()).device
    sch = dpm_solver(model.noise_schedule, steps)
    cond = model.context(feats.to(device))
    uncond = model.context(feats.to(device), uncond=True)
    latents = noise.to(device) * sch.init_noise_sigma
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    for t in sch.timesteps:
        with autocast:
            if batched_cfg:
                inp = sch.scale_model_input(torch.cat([latents, latents]), t)
                eps_u, eps_c = model.unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            else:
                inp = sch.scale_model_input(latents, t)
                eps_u = model.unet(inp, t, encoder_hidden_states=uncond).sample
                eps_c = model.unet(inp, t, encoder_hidden_states=cond).sample
        eps = eps_u.float() + guidance * (eps_c.float() - eps_u.float())
        latents = sch.step(eps, t, latents).prev_sample
    return latents


@dataclass
class GenerationConfig:
    """How a test set is generated (paper: 10 samples per video, w = 4.5, 25 DPM-Solver++ steps)."""

    samples_per_clip: int = 10
    guidance: float = GUIDANCE
    steps: int = STEPS
    seed: int = 0
    batch_size: int = 32  # samples per UNet batch (the CFG batch is twice this)
    clips_per_shard: int = 16
    griffin_lim_iters: int = 32
    bf16: bool = True  # only takes effect on CUDA


def sample_seed(seed: int, clip_id: str, k: int) -> int:
    return stable_hash("generate", seed, clip_id, k)


def latent_shape_for(model, n_frames: int) -> tuple[int, ...]:
    """The latent (C, h, w) that decodes to the mel of ``n_frames`` video frames (16 mel frames each)."""
    c = model.unet.config.in_channels
    h, w_per_frame = model.latent_geometry
    return c, h, w_per_frame * n_frames


@torch.no_grad()
def sample_mels(model, feats: torch.Tensor, seeds: list[int], cfg: GenerationConfig | None = None) -> torch.Tensor:
    """One mel (B, 128, 16 T) in [0, 1] per row of ``feats`` (B, T, 512), each from its own seed, on the CPU,
    batched by ``cfg.batch_size``."""
    cfg = cfg or GenerationConfig()
    device = next(model.unet.parameters()).device
    dtype = torch.bfloat16 if cfg.bf16 and device.type == "cuda" else None
    shape = latent_shape_for(model, feats.shape[1])
    mels = []
    for i in range(0, len(feats), cfg.batch_size):
        noise = initial_noise(shape, seeds[i:i + cfg.batch_size])
        z = sample_latents(model, feats[i:i + cfg.batch_size].float(), noise, guidance=cfg.guidance, steps=cfg.steps,
                           dtype=dtype)
        mels.append(model.decode_latent(z).float().clamp(0, 1).cpu())
    return torch.cat(mels)


@torch.no_grad()
def sample_sounds(model, feats: torch.Tensor, seeds: list[int], cfg: GenerationConfig | None = None, *,
                  vocoder=None) -> tuple[np.ndarray, np.ndarray]:
    """One sound per row of ``feats`` (B, T, 512), each from its own seed: (mels (B, 128, 16 T) in [0, 1],
    16-kHz waveforms (B, L)), batched by ``cfg.batch_size``."""
    cfg = cfg or GenerationConfig()
    device = next(model.unet.parameters()).device
    vocoder = vocoder or GriffinLimVocoder(n_iter=cfg.griffin_lim_iters, device=device)
    mels = sample_mels(model, feats, seeds, cfg)
    wavs = [vocoder(mels[i:i + cfg.batch_size].to(device)).float().cpu() for i in range(0, len(mels), cfg.batch_size)]
    return mels.numpy(), torch.cat(wavs).numpy()


def window_features(features: dict[str, torch.Tensor], n_frames: int | None
                    ) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """The first ``n_frames`` of each clip's features (the generator's window; None: all of them), and the
    clips too short for it as ``(clip id, reason)``."""
    if n_frames is None:
        return features, []
    short = [(c, f"{len(f)} frames of features, fewer than the {n_frames}-frame window")
             for c, f in features.items() if len(f) < n_frames]
    return {c: f[:n_frames] for c, f in features.items() if len(f) >= n_frames}, short


@torch.no_grad()
def generate_set(model, features: dict[str, torch.Tensor], out_dir: str | Path, cfg: GenerationConfig | None = None,
                 *, vocoder=None, progress: bool = True) -> Path:
    """Generate ``cfg.samples_per_clip`` sounds for every clip of ``features`` (clip id -> (T, 512)).

    Writes ``out_dir/shard_*.npz`` (keys ``clip_id``, ``sample``, ``mel`` (n, 128, N) float16,
    ``wav`` (n, L) int16 PCM with ``wav_gain`` (n,), see :func:`~cinefoley.media.audio.to_pcm16`) and
    ``generation.json``; resumes by skipping finished shards. At Diff-Foley's size (8.192 s: 131072
    samples, a 128 × 512 mel) a sound takes 393 KB.
    """
    cfg = cfg or GenerationConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    vocoder = vocoder or GriffinLimVocoder(n_iter=cfg.griffin_lim_iters, device=next(model.unet.parameters()).device)
    clip_ids = sorted(features)
    shards = [clip_ids[i:i + cfg.clips_per_shard] for i in range(0, len(clip_ids), cfg.clips_per_shard)]
    done = 0
    for s, shard_ids in progress_bar(my_share(list(enumerate(shards))), disable=not progress or rank_world()[0] != 0,
                                     desc=f"generate {out_dir.parent.name}/{out_dir.name}"):
        path = out_dir / f"shard_{s:05d}.npz"
        if path.exists():
            continue
        jobs = [(cid, k) for cid in shard_ids for k in range(cfg.samples_per_clip)]
        feats = torch.stack([features[cid] for cid, _ in jobs])
        mels, wavs = sample_sounds(model, feats, [sample_seed(cfg.seed, cid, k) for cid, k in jobs], cfg,
                                   vocoder=vocoder)
        pcm, gain = to_pcm16(wavs)  # the paper's 920 k sounds: 0.39 MB each with the mel, not 0.65 (docs/capacity.md)
        atomic_savez(path, clip_id=np.array([c for c, _ in jobs]), sample=np.array([k for _, k in jobs]),
                     mel=mels.astype(np.float16), wav=pcm, wav_gain=gain)
        done += 1
    done = sum(gather(done))
    if rank_world()[0] == 0:
        write_run_record(out_dir, config=cfg, name="generation.json", started=started,
                         results={"clips": len(clip_ids), "shards": len(shards), "shards_written_now": done,
                                  "ranks": rank_world()[1]})
    barrier()  # every shard exists on return, on every rank
    return out_dir


def read_generated(out_dir: str | Path) -> dict[str, np.ndarray]:
    """All shards of a generated set, concatenated, sorted by (clip id, sample); ``wav`` as float32."""
    paths = sorted(Path(out_dir).glob("shard_*.npz"))
    if not paths:
        raise FileNotFoundError(f"{out_dir}: no generated shards")
    parts = [_read_shard(p) for p in paths]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((out["sample"], out["clip_id"]))
    return {k: v[order] for k, v in out.items()}


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    """A shard with ``wav`` as float32: from 16-bit PCM and its gain, or as stored by runs made before."""
    with np.load(path) as z:
        shard = dict(z)
    if "wav_gain" in shard:
        shard["wav"] = from_pcm16(shard["wav"], shard.pop("wav_gain"))
    return shard


def first_sample(generated: dict[str, np.ndarray], clip_id: str, sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mel float32, wav) of one generated sound of :func:`read_generated`'s output."""
    hit = np.flatnonzero((generated["clip_id"] == clip_id) & (generated["sample"] == sample))
    if not len(hit):
        raise KeyError(f"no sample {sample} of clip {clip_id!r} was generated")
    return generated["mel"][hit[0]].astype(np.float32), generated["wav"][hit[0]]
