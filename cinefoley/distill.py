"""Self-distillation of the video encoder (paper §3.3).

Teacher T = the pretrained video encoder, frozen. Student S = a copy of T. For a training clip x_v
and its variation x_v^f (same sound, same timing)::

    c_t = T(x_v)                      # always the *unvaried* clip
    c_s' = S(x_v^f)  for the proportion k of clips that get a variation, S(x_v) otherwise
    L_p = cos(c_t, c_s') + MSE(c_t, c_s')        (cos as a distance: 1 − cosine similarity)

Because c_t never depends on the variation, it is computed once per clip and cached on disk in
Diff-Foley's own layout (``<clip_id>.npz`` with key ``feat``), instead of a teacher forward per step.
Variations are applied to a whole batch in one call on the training device
(:func:`cinefoley.variations.apply_batch`).

The loop reads top to bottom like nanoGPT's. Every random choice of a step comes from a generator
seeded by (seed, epoch, step), and checkpoints hold the student, the optimizer and the position in
the run, so a run killed and resumed ends with exactly the weights of one that was not (on CPU).
Several GPUs: launch with ``torchrun --nproc_per_node N``; each rank takes its share of every global
batch (DDP averages the gradients), so the result matches one process. bf16 autocast on CUDA.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cinefoley.utils import atomic_savez, atomic_torch_save, stable_hash, write_run_record
from cinefoley.variations import VariationSampler, apply, apply_batch


def distill_loss(c_t: torch.Tensor, c_s: torch.Tensor) -> torch.Tensor:
    """L_p (Eq. 2): mean over frames of (1 − cos(c_t, c_s)) plus MSE(c_t, c_s); inputs (B, T, C)."""
    if c_t.shape != c_s.shape or c_t.ndim != 3:
        raise ValueError(f"c_t and c_s must both be (B, T, C); got {tuple(c_t.shape)} and {tuple(c_s.shape)}")
    c_t, c_s = c_t.float(), c_s.float()
    return (1.0 - F.cosine_similarity(c_t, c_s, dim=-1)).mean() + F.mse_loss(c_s, c_t)


def as_frames(videos: torch.Tensor) -> torch.Tensor:
    """uint8 clips -> float in [0, 1] (what CAVP expects); float clips pass through."""
    return videos.float() / 255.0 if videos.dtype == torch.uint8 else videos


# ---------------------------------------------------------------------------------------------
# the teacher's features, cached once

@torch.no_grad()
def cache_teacher_features(teacher: nn.Module, videos: torch.Tensor, clip_ids: list[str], out_dir: str | Path,
                           *, batch_size: int = 32, device: str | torch.device = "cpu",
                           progress: bool = True) -> Path:
    """Write c_t = T(x_v) of every clip to ``out_dir/<clip_id>.npz`` (key ``feat``, (T, C) float32).

    Clips already cached are skipped, so an interrupted extraction resumes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i, cid in enumerate(clip_ids) if not (out_dir / f"{cid}.npz").exists()]
    teacher = teacher.to(device).eval()
    for chunk in tqdm([todo[i:i + batch_size] for i in range(0, len(todo), batch_size)],
                      desc="teacher features", disable=not progress or not todo):
        feats = teacher(as_frames(videos[chunk].to(device))).float().cpu().numpy()
        for i, f in zip(chunk, feats):
            atomic_savez(out_dir / f"{clip_ids[i]}.npz", feat=f.astype(np.float32))
    return out_dir


def load_features(feature_dir: str | Path, clip_ids: list[str]) -> torch.Tensor:
    """Stack the cached ``feat`` arrays of ``clip_ids`` into (N, T, C)."""
    feature_dir = Path(feature_dir)
    out = []
    for cid in clip_ids:
        path = feature_dir / f"{cid}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no cached teacher feature for clip {cid}")
        out.append(torch.from_numpy(np.load(path)["feat"]))
    return torch.stack(out)


@torch.no_grad()
def encode(encoder: nn.Module, videos: torch.Tensor, *, batch_size: int = 64,
           device: str | torch.device = "cpu") -> torch.Tensor:
    """Features of many clips, batched, on CPU in float32."""
    encoder = encoder.to(device).eval()
    return torch.cat([encoder(as_frames(videos[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(videos), batch_size)])


def frame_similarity(c_ref: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per-frame cosine similarity (N, T) of features c to the reference c_ref."""
    return F.cosine_similarity(c_ref.float(), c.float(), dim=-1)


# ---------------------------------------------------------------------------------------------
# training

@dataclass
class DistillConfig:
    """Settings of one distillation run (paper: f_cu, k = 0.75, AdamW lr 5e-4, batch 32, 25 epochs)."""

    variation: str = "cu"  # "cu", "cm" or "cu&cm"
    k: float = 0.75
    a1: float = 0.4
    a2: float = 0.6
    epochs: int = 25
    batch_size: int = 32  # the global batch, summed over DDP ranks
    lr: float = 5e-4
    weight_decay: float = 0.01
    seed: int = 0
    device: str = "cpu"
    teacher_targets: str = "cached"  # "cached" (c_t from disk) or "forward" (a teacher pass per step)
    batched_variations: bool = True  # one apply_batch call on the device, or per-clip apply on the CPU
    checkpoint_every: int = 50  # steps; a checkpoint is also written at the end of every epoch
    max_steps: int | None = None  # stop early (to test resuming); None = all epochs


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_generator(cfg: DistillConfig, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(stable_hash("distill", cfg.seed, epoch, step))


def _epoch_order(cfg: DistillConfig, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(stable_hash("order", cfg.seed, epoch)))


def _varied_batch(videos: torch.Tensor, params: list, cfg: DistillConfig) -> torch.Tensor:
    if cfg.batched_variations:
        return apply_batch(videos.to(cfg.device), params)
    # the naive reference path: one clip at a time on the CPU, then to the device
    return torch.stack([v if p is None else apply(v, p) for v, p in zip(videos, params)]).to(cfg.device)


# ---------------------------------------------------------------------------------------------
# the pieces every distillation loop shares (in-memory clips here, streamed VGGSound in real_distill)

def start_student(teacher: nn.Module, cfg: DistillConfig, ckpt_path: Path
                  ) -> tuple[nn.Module, torch.optim.Optimizer, int, int, dict]:
    """S ← T (a trainable copy of the teacher) and its AdamW; restored from ``ckpt_path`` when it exists.

    Returns ``(student, optimizer, epoch, step, history)``: where in the run to go on from.
    """
    student = copy.deepcopy(teacher).to(cfg.device).requires_grad_(True).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    epoch, step, history = 0, 0, {"step_loss": [], "epoch_loss": []}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=cfg.device, weights_only=False)
        student.load_state_dict(ckpt["student"])
        opt.load_state_dict(ckpt["optimizer"])
        epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
    return student, opt, epoch, step, history


def save_student_checkpoint(ckpt_path: Path, student: nn.Module, opt: torch.optim.Optimizer, cfg: DistillConfig,
                            epoch: int, step: int, history: dict) -> None:
    atomic_torch_save({"student": student.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                       "step": step, "history": history, "config": asdict(cfg)}, ckpt_path)


def student_step(model: nn.Module, opt: torch.optim.Optimizer, c_t: torch.Tensor, x: torch.Tensor,
                 cfg: DistillConfig) -> float:
    """One AdamW step on L_p(c_t, S(x)) (Eq. 2), x the (partly varied) clips in [0, 1]; bf16 on CUDA."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(cfg.device).startswith("cuda")):
        c_s = model(x)
    loss = distill_loss(c_t, c_s)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def write_student(out_dir: Path, student: nn.Module, cfg: DistillConfig, history: dict, started: float,
                  extra: dict | None = None) -> None:
    """The finished run: ``student_state.pt`` (the encoder's state dict) and ``distill.json``."""
    atomic_torch_save(student.state_dict(), out_dir / "student_state.pt")
    write_run_record(out_dir, config=cfg, results={"epoch_loss": history["epoch_loss"],
                                                   "final_loss": history["epoch_loss"][-1], **(extra or {})},
                     name="distill.json", started=started)


def distill(teacher: nn.Module, videos: torch.Tensor, clip_ids: list[str], out_dir: str | Path,
            cfg: DistillConfig | None = None, *, feature_dir: str | Path | None = None,
            progress: bool = True) -> tuple[nn.Module, dict]:
    """Train a student from ``teacher`` on ``videos`` uint8 (N, T, 3, H, W); returns (student, history).

    ``out_dir`` receives ``checkpoint.pt`` (resumed from when present), ``student_state.pt`` and
    ``distill.json`` (config, versions, loss history). c_t is read from ``feature_dir`` (default
    ``out_dir/teacher_feats``) and computed there first when missing.
    """
    cfg = cfg or DistillConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = _rank_world()
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} does not split over {world} ranks")
    started = time.time()
    sampler = VariationSampler(cfg.variation, cfg.k, cfg.a1, cfg.a2)
    n, t, _, h, w = videos.shape

    teacher = teacher.to(cfg.device).eval().requires_grad_(False)
    if cfg.teacher_targets == "cached":
        feature_dir = Path(feature_dir or out_dir / "teacher_feats")
        if rank == 0:
            cache_teacher_features(teacher, videos, clip_ids, feature_dir, device=cfg.device, progress=progress)
        if world > 1:
            dist.barrier()
        c_t_all = load_features(feature_dir, clip_ids)

    ckpt_path = out_dir / "checkpoint.pt"
    student, opt, epoch, step, history = start_student(teacher, cfg, ckpt_path)
    model = student
    if world > 1:
        model = nn.parallel.DistributedDataParallel(student)
    steps_per_epoch = math.ceil(n / cfg.batch_size)

    def save_checkpoint():
        if rank == 0:
            save_student_checkpoint(ckpt_path, student, opt, cfg, epoch, step, history)

    total = cfg.epochs * steps_per_epoch
    bar = tqdm(total=total, initial=epoch * steps_per_epoch + step, desc="distill",
               disable=not progress or rank != 0)
    global_step = epoch * steps_per_epoch + step
    while epoch < cfg.epochs:
        order = _epoch_order(cfg, epoch, n)
        while step < steps_per_epoch:
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                save_checkpoint()
                bar.close()
                return student.eval(), history
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            params = sampler.draw_batch(len(idx), t, h, w, generator=_step_generator(cfg, epoch, step))
            mine = slice(rank * len(idx) // world, (rank + 1) * len(idx) // world)  # this rank's share
            idx, params = idx[mine], params[mine]
            batch = videos[idx]
            with torch.no_grad():
                c_t = (c_t_all[idx].to(cfg.device) if cfg.teacher_targets == "cached"
                       else teacher(as_frames(batch.to(cfg.device))).float())
            loss = student_step(model, opt, c_t, as_frames(_varied_batch(batch, params, cfg)), cfg)
            history["step_loss"].append(loss)
            step += 1
            global_step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch)
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
        history["epoch_loss"].append(float(np.mean(history["step_loss"][-steps_per_epoch:])))
        epoch, step = epoch + 1, 0
        save_checkpoint()
    bar.close()
    student.eval()
    if rank == 0:
        write_student(out_dir, student, cfg, history, started)
    return student, history


def init_distributed() -> bool:
    """Join a ``torchrun`` process group (gloo on CPU, nccl on CUDA); False when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True
