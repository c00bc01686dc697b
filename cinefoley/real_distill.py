"""Self-distillation on VGGSound, streamed from the videos (paper §3.3 at the real tier).

VGGSound train (~183k clips of 40 frames at 224 px) does not fit in memory the way the CineToy clips
do for :func:`cinefoley.distill.distill`, so here every clip is decoded when its batch comes up:

* :class:`VGGSoundDistillSet` reads one clip at 4 fps (:func:`cinefoley.video.load_video`), draws its
  variation f_cu / f_cm with probability k (:class:`cinefoley.variations.VariationSampler`), applies
  it at the video's native resolution and squash-resizes the result to CAVP's 224 px — exactly the
  path :func:`cinefoley.real_tier.extract_features` takes for VGG-CU / VGG-CM, so the student trains on
  what it is tested on. It pairs the clip with the teacher's cached c_t = T(x_v) of the *full* clip
  (``<clip_id>.npz``, key ``feat``, written by ``cinefoley features``); the teacher never runs here.
* A ``torch.utils.data.DataLoader`` runs that decoding in ``num_workers`` processes, so it overlaps the
  student's step in the main process.
* :func:`distill_vggsound` is the loop of :func:`cinefoley.distill.distill` with the same pieces
  (:func:`~cinefoley.distill.start_student`, :func:`~cinefoley.distill.student_step` on L_p of Eq. 2,
  the checkpoint and the run record), one process.

Determinism: the clip order of an epoch comes from (seed, epoch) and each clip's variation from
(seed, epoch, clip id), never from a worker's RNG, so the number of workers does not change the run,
and a run resumed from ``checkpoint.pt`` (written every ``checkpoint_every`` steps and at the end of
each epoch) sees the same batches from where it stopped. Clips whose video cannot be decoded, or
that are shorter than ``n_frames``, are left out of their batch and listed in ``out/unreadable.csv``;
clips that ``cinefoley features`` already found unreadable are listed there without being opened.
A clip of the manifest with neither a feature file nor such an entry is an error naming the file.

``n_frames`` (default 40, Diff-Foley's stored length for a 10-s clip) frames are decoded per clip and
trained against the first ``n_frames`` rows of c_t. CAVP's temporal convolutions pad at the edges of
the frames they see, so with a smaller ``n_frames`` than the features were extracted with, c_t's last
rows were computed with context the student does not get.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cinefoley.distill import (DistillConfig, _epoch_order, _rank_world, as_frames, save_student_checkpoint,
                               start_student, student_step, write_student)
from cinefoley.encoders.cavp import INPUT_SIZE, squash_resize
from cinefoley.errors import MediaError
from cinefoley.real_tier import FPS, MAX_FRAMES, UNREADABLE_COLUMNS, _read_rows, _resolve, _start, _write_csv
from cinefoley.utils import stable_hash
from cinefoley.variations import VariationSampler, apply
from cinefoley.video import load_video


@dataclass
class StreamDistillConfig(DistillConfig):
    """:class:`~cinefoley.distill.DistillConfig` (f, k, a1/a2, AdamW, batch, epochs, seed) plus the data path.

    c_t always comes from the feature cache (``teacher_targets`` must stay ``"cached"``) and the
    variations are applied clip by clip in the loader's workers (``batched_variations`` is not used).
    """

    split: str | None = "train"  # the manifest's rows to train on; None = all rows
    n_frames: int = MAX_FRAMES
    size: int = INPUT_SIZE
    num_workers: int = 4
    prefetch_factor: int = 2

    def __post_init__(self):
        if self.teacher_targets != "cached":
            raise ValueError("streamed distillation reads c_t from the feature cache; teacher_targets must be "
                             f"'cached', got {self.teacher_targets!r}")
        if self.n_frames < 1 or self.size < 1 or self.num_workers < 0:
            raise ValueError(f"need n_frames >= 1, size >= 1, num_workers >= 0; got {self.n_frames}, "
                             f"{self.size}, {self.num_workers}")


@dataclass(frozen=True)
class StreamClip:
    """One training clip: its video, where the 4-fps frames start, and its cached c_t."""

    clip_id: str
    video: Path
    start_s: float
    feature: Path


def stream_clips(manifest: str | Path, feature_dir: str | Path, *, split: str | None = "train"
                 ) -> tuple[list[StreamClip], list[dict]]:
    """The clips of ``manifest`` (rows of ``split``) with their feature files, and those left out.

    A clip listed in ``feature_dir/unreadable.csv`` (its video failed at feature extraction) is left
    out with that reason; any other clip without ``feature_dir/<clip_id>.npz`` raises
    ``FileNotFoundError`` naming the first missing file.
    """
    manifest, feature_dir = Path(manifest), Path(feature_dir)
    df, root = _read_rows(manifest)
    if split is not None and "split" in df:
        df = df[df["split"] == split]
    if df.empty:
        raise ValueError(f"{manifest}: no clips{f' in split {split!r}' if split else ''}")
    failed_before = {}
    if (feature_dir / "unreadable.csv").is_file():
        prior = pd.read_csv(feature_dir / "unreadable.csv", dtype=str, keep_default_na=False)
        failed_before = dict(zip(prior["clip_id"], prior["reason"]))
    clips, skipped, missing = [], [], []
    for _, row in df.iterrows():
        cid, feature = row["clip_id"], feature_dir / f"{row['clip_id']}.npz"
        if feature.is_file():
            clips.append(StreamClip(cid, _resolve(root, row["video_path"]), _start(row), feature))
        elif cid in failed_before:
            skipped.append({"clip_id": cid, "video_path": row["video_path"],
                            "reason": f"unreadable at feature extraction: {failed_before[cid]}"})
        else:
            missing.append(feature)
    if missing:
        raise FileNotFoundError(
            f"{missing[0]}: no cached teacher feature c_t for this clip of {manifest} ({len(missing)} clips "
            f"lack one); write them with `cinefoley features --manifest {manifest} --out {feature_dir} --cavp ...`")
    return clips, skipped


def _read_feature(path: Path) -> np.ndarray:
    try:
        with np.load(path) as z:
            feat = z["feat"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a readable feature file with key 'feat' ({e})") from None
    if feat.ndim != 2:
        raise ValueError(f"{path}: feature 'feat' must be (T, C), has shape {feat.shape}")
    return feat.astype(np.float32, copy=False)


class VGGSoundDistillSet(Dataset):
    """Training pairs (x_v^f or x_v, c_t) decoded on demand; indexed by ``(epoch, clip index)``.

    An item is ``{"index", "video": uint8 (n_frames, 3, size, size), "c_t": float32 (n_frames, C),
    "kind": "close_up" / "camera_move" / ""}``, or ``{"index", "error": reason}`` for a clip that
    cannot be used (the loop skips and reports it). The variation is drawn from (seed, epoch, clip id).
    """

    def __init__(self, clips: list[StreamClip], cfg: StreamDistillConfig):
        self.clips, self.cfg = clips, cfg
        self.sampler = VariationSampler(cfg.variation, cfg.k, cfg.a1, cfg.a2)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        clip, n = self.clips[i], self.cfg.n_frames
        c_t = _read_feature(clip.feature)  # a broken cache is not the video's fault: it raises
        if len(c_t) < n:
            return {"index": i, "error": f"clip has {len(c_t)} 4-fps frames of features, the run needs {n}"}
        try:
            video = load_video(clip.video, fps=FPS, n_frames=n, start=clip.start_s)
        except MediaError as e:
            return {"index": i, "error": e.reason}
        g = torch.Generator().manual_seed(stable_hash("distill-vggsound", self.cfg.seed, epoch, clip.clip_id))
        params = self.sampler.draw(n, video.shape[2], video.shape[3], generator=g)
        frames = video if params is None else apply(video, params)  # at native size, like VGG-CU/CM
        return {"index": i, "video": squash_resize(frames, self.cfg.size), "c_t": torch.from_numpy(c_t[:n]),
                "kind": "" if params is None else params.kind}


def collate_pairs(items: list[dict]) -> dict:
    """Stack the usable clips of a batch; the others go to ``failed`` as ``(index, reason)``."""
    ok = [it for it in items if "error" not in it]
    return {"index": [it["index"] for it in ok],
            "video": torch.stack([it["video"] for it in ok]) if ok else None,
            "c_t": torch.stack([it["c_t"] for it in ok]) if ok else None,
            "kind": [it["kind"] for it in ok],
            "failed": [(it["index"], it["error"]) for it in items if "error" in it]}


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode in parallel; intra-op threads would only oversubscribe


def pair_loader(dataset: VGGSoundDistillSet, batches: list[list[tuple[int, int]]], cfg: StreamDistillConfig
                ) -> DataLoader:
    """A loader that yields :func:`collate_pairs` batches of ``batches`` in order, decoded by the workers."""
    workers = cfg.num_workers
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_pairs, num_workers=workers,
                      prefetch_factor=cfg.prefetch_factor if workers else None, worker_init_fn=_one_thread,
                      pin_memory=str(cfg.device).startswith("cuda"))


def epoch_batches(cfg: StreamDistillConfig, epoch: int, n: int, first_step: int = 0) -> list[list[tuple[int, int]]]:
    """The batches of ``epoch`` from step ``first_step`` on: a seeded permutation cut into ``batch_size``."""
    order = _epoch_order(cfg, epoch, n).tolist()
    steps = math.ceil(n / cfg.batch_size)
    return [[(epoch, i) for i in order[s * cfg.batch_size:(s + 1) * cfg.batch_size]] for s in range(first_step, steps)]


def _read_unreadable(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    return {r["clip_id"]: r for r in rows}


def distill_vggsound(teacher: nn.Module, manifest: str | Path, feature_dir: str | Path, out_dir: str | Path,
                     cfg: StreamDistillConfig | None = None, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Distil a student S ← ``teacher`` (a loaded CAVP encoder) on the clips of ``manifest``; returns (S, history).

    c_t is read from ``feature_dir/<clip_id>.npz``. ``out_dir`` receives ``checkpoint.pt`` (resumed
    from when present), ``unreadable.csv``, and at the end ``student_state.pt`` (loadable with
    :func:`cinefoley.encoders.cavp.load_cavp`) and ``distill.json``. ``history["step_loss"]`` holds
    L_p of every step that had at least one usable clip.
    """
    cfg = cfg or StreamDistillConfig()
    if _rank_world()[1] > 1:
        raise RuntimeError("distill_vggsound runs in one process; a batch whose clips all fail would leave "
                           "DDP ranks out of step, so launch it without torchrun")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    clips, skipped = stream_clips(manifest, feature_dir, split=cfg.split)
    if not clips:
        raise ValueError(f"{manifest}: no clip to train on; all {len(skipped)} were unreadable at feature extraction")
    unreadable_path = out_dir / "unreadable.csv"
    unreadable = _read_unreadable(unreadable_path)
    unreadable.update({s["clip_id"]: s for s in skipped})

    def save_unreadable():
        _write_csv(unreadable_path, pd.DataFrame(list(unreadable.values()), columns=UNREADABLE_COLUMNS))

    dataset = VGGSoundDistillSet(clips, cfg)
    teacher = teacher.to(cfg.device).eval().requires_grad_(False)
    ckpt_path = out_dir / "checkpoint.pt"
    student, opt, epoch, step, history = start_student(teacher, cfg, ckpt_path)
    history.setdefault("step_epoch", [])  # the epoch of each logged loss (skipped steps log none)

    def save_checkpoint():
        save_student_checkpoint(ckpt_path, student, opt, cfg, epoch, step, history)
        save_unreadable()

    n = len(clips)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    global_step = epoch * steps_per_epoch + step
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=global_step, desc="distill (VGGSound)",
               disable=not progress)
    while epoch < cfg.epochs:
        batches = epoch_batches(cfg, epoch, n, step)
        if cfg.max_steps is not None:
            batches = batches[:max(0, cfg.max_steps - global_step)]
        for batch in pair_loader(dataset, batches, cfg):
            for i, reason in batch["failed"]:
                unreadable[clips[i].clip_id] = {"clip_id": clips[i].clip_id, "video_path": str(clips[i].video),
                                                "reason": reason}
            if batch["video"] is not None:
                x = as_frames(batch["video"].to(cfg.device, non_blocking=True))
                loss = student_step(student, opt, batch["c_t"].to(cfg.device), x, cfg)
                history["step_loss"].append(loss)
                history["step_epoch"].append(epoch)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch)
            step += 1
            global_step += 1
            bar.update()
            if step % cfg.checkpoint_every == 0:
                save_checkpoint()
        if step < steps_per_epoch:  # stopped by max_steps
            save_checkpoint()
            bar.close()
            return student.eval(), history
        losses = [v for v, e in zip(history["step_loss"], history["step_epoch"]) if e == epoch]
        history["epoch_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        epoch, step = epoch + 1, 0
        save_checkpoint()
    bar.close()
    student.eval()
    write_student(out_dir, student, cfg, history, started,
                  extra={"clips": n, "unreadable": len(unreadable), "manifest": str(manifest),
                         "feature_dir": str(feature_dir)})
    return student, history


# ----------------------------------------------------------------------------------------------
# command line

def register_distill_vggsound(subparsers: argparse._SubParsersAction) -> None:
    """Add ``cinefoley distill-vggsound``."""
    d = DistillConfig()
    p = subparsers.add_parser("distill-vggsound", help="self-distil CAVP on VGGSound, decoding clips as it goes",
                              description=distill_vggsound.__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True, help="manifest from `cinefoley vggsound manifest`")
    p.add_argument("--features", required=True, help="teacher features c_t from `cinefoley features`")
    p.add_argument("--cavp", required=True, help="the teacher, a cavp_epoch66.ckpt-format file")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, student_state.pt, distill.json)")
    p.add_argument("--split", default="train", help="manifest rows to train on ('all' for every row)")
    p.add_argument("--variation", choices=("cu", "cm", "cu&cm"), default=d.variation)
    p.add_argument("--k", type=float, default=d.k, help="share of clips that get a variation")
    p.add_argument("--a1", type=float, default=d.a1)
    p.add_argument("--a2", type=float, default=d.a2)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--n-frames", type=int, default=MAX_FRAMES, help="4-fps frames per clip")
    p.add_argument("--workers", type=int, default=4, help="DataLoader processes decoding clips")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (resume later)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cavp-stage-blocks", type=int, nargs=4, default=(3, 4, 6, 3), metavar="N",
                   help="SlowOnly blocks per stage (3 4 6 3 = the released R50)")
    p.add_argument("--cavp-base-channels", type=int, default=64, help="SlowOnly stem width (64 = released)")
    p.set_defaults(func=_run_distill_vggsound)


def _run_distill_vggsound(args: argparse.Namespace) -> int:
    from cinefoley.encoders.cavp import load_cavp

    teacher = load_cavp(args.cavp, allow_audio_branch=True, stage_blocks=tuple(args.cavp_stage_blocks),
                        base_channels=args.cavp_base_channels)
    cfg = StreamDistillConfig(variation=args.variation, k=args.k, a1=args.a1, a2=args.a2, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                              checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                              split=None if args.split == "all" else args.split, n_frames=args.n_frames,
                              num_workers=args.workers)
    _, history = distill_vggsound(teacher, args.manifest, args.features, args.out, cfg)
    out = Path(args.out)
    unreadable = len(pd.read_csv(out / "unreadable.csv"))
    done = (out / "student_state.pt").exists()
    last = history["step_loss"][-1] if history["step_loss"] else float("nan")
    print(f"{'finished' if done else 'stopped'} after {len(history['step_loss'])} steps, last L_p {last:.4f}; "
          f"{unreadable} clips skipped (listed in {out / 'unreadable.csv'}); run in {out}")
    return 0
