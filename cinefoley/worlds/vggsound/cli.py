"""``cinefoley vggsound ...``: the real tier's steps as commands, for runs outside the notebooks.

``manifest`` (the clips of the CSV whose videos you have), ``frames`` (the 4-fps frame store, decoded once),
``testsets`` (VGGSound / VGG-CU / VGG-CM manifests), ``features`` (CAVP features once per clip),
``distill`` (streamed self-distillation) and ``generate`` (sound from features with Diff-Foley's LDM).
``--frames STORE`` makes the later steps read the store. ``features``, ``distill`` and ``generate`` run
under ``torchrun`` as they are, one rank per GPU (:mod:`cinefoley.distributed`). Heavy modules are
imported when a command runs, so ``cinefoley --help`` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cinefoley.worlds.vggsound.manifest import MAX_FRAMES, SPLITS


def _cavp_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cavp", required=True, help="a cavp_epoch66.ckpt-format file")
    p.add_argument("--cavp-stage-blocks", type=int, nargs=4, default=(3, 4, 6, 3), metavar="N",
                   help="SlowOnly blocks per stage (3 4 6 3 = the released R50)")
    p.add_argument("--cavp-base-channels", type=int, default=64, help="SlowOnly stem width (64 = released)")


def _device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``vggsound {manifest,frames,testsets,features,distill,generate}``."""
    p = subparsers.add_parser("vggsound", help="the real tier: VGGSound manifests, VGG-CU/CM, features, distillation")
    sub = p.add_subparsers(dest="vggsound_command", required=True)

    m = sub.add_parser("manifest", help="build a manifest of the VGGSound clips whose videos you have")
    m.add_argument("--csv", required=True, help="vggsound.csv or a split list such as test.csv")
    m.add_argument("--video-dir", required=True, help="folder searched (recursively) for the videos")
    m.add_argument("--out", required=True, help="manifest CSV to write")
    m.add_argument("--split", choices=SPLITS, help="keep only this split (official file) / the list's split")
    m.add_argument("--format", dest="fmt", choices=("auto", "official", "list"), default="auto")
    m.set_defaults(func=_run_manifest)

    fr = sub.add_parser("frames", help="decode every clip once into a 4-fps frame store (WebDataset JPEG shards)")
    fr.add_argument("--manifest", required=True, help="manifest from `cinefoley vggsound manifest`")
    fr.add_argument("--out", required=True, help="store folder (frames-*.tar, their indexes, store.json)")
    fr.add_argument("--workers", type=int, default=4, help="processes, each writing one shard at a time")
    fr.add_argument("--clips-per-shard", type=int, default=64)
    fr.set_defaults(func=_run_frames)

    t = sub.add_parser("testsets", help="write the VGGSound / VGG-CU / VGG-CM test manifests")
    t.add_argument("--manifest", required=True, help="manifest from `cinefoley vggsound manifest` (frame sizes "
                                                     "are cached into it)")
    t.add_argument("--out", required=True, help="folder for <split>_original/_cu/_cm.csv")
    t.add_argument("--split", choices=SPLITS, default="test")
    t.add_argument("--seed", type=int, default=0, help="seed of the per-clip variation hash")
    t.add_argument("--a1", type=float, default=0.4, help="smallest crop ratio")
    t.add_argument("--a2", type=float, default=0.6, help="largest crop ratio")
    t.add_argument("--max-frames", type=int, default=MAX_FRAMES, help="4-fps frames per clip at most")
    t.set_defaults(func=_run_testsets)

    f = sub.add_parser("features", help="extract CAVP features once per clip (Diff-Foley's .npz layout)")
    f.add_argument("--manifest", required=True, help="clips to encode as they are (any manifest)")
    f.add_argument("--variation-manifest", nargs="+", default=[], metavar="MANIFEST",
                   help="CU/CM test manifests: their varied clips go to OUT/<variation>/")
    _cavp_arguments(f)
    f.add_argument("--out", required=True, help="feature folder (<clip_id>.npz, key feat)")
    f.add_argument("--device", help="where CAVP runs (default: cuda when available, else cpu)")
    f.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                   help="4-fps frames per clip at most, for manifests without n_frames")
    f.add_argument("--workers", type=int, default=4, help="videos decoded ahead of the encoder")
    f.add_argument("--frames", metavar="STORE", help="read the clips from this frame store, not the mp4s")
    f.set_defaults(func=_run_features)

    d = sub.add_parser("distill", help="self-distil CAVP on VGGSound, decoding clips as it goes")
    d.add_argument("--manifest", required=True, help="manifest from `cinefoley vggsound manifest`")
    d.add_argument("--features", required=True, help="teacher features c_t from `cinefoley vggsound features`")
    _cavp_arguments(d)
    d.add_argument("--out", required=True, help="run folder (checkpoint.pt, student_state.pt, distill.json)")
    d.add_argument("--split", default="train", help="manifest rows to train on ('all' for every row)")
    d.add_argument("--variation", choices=("cu", "cm", "cu&cm"), default="cu")
    d.add_argument("--k", type=float, default=0.75, help="share of clips that get a variation")
    d.add_argument("--a1", type=float, default=0.4)
    d.add_argument("--a2", type=float, default=0.6)
    d.add_argument("--epochs", type=int, default=25)
    d.add_argument("--batch-size", type=int, default=32, help="the global batch, over all ranks")
    d.add_argument("--lr", type=float, default=5e-4)
    d.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine",
                   help="cosine decay to 0 over the run (ours; the paper names no schedule) or constant")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--n-frames", type=int, default=MAX_FRAMES, help="4-fps frames per clip")
    d.add_argument("--workers", type=int, default=4, help="DataLoader processes decoding clips")
    d.add_argument("--frames", metavar="STORE", help="read the clips from this frame store, not the mp4s")
    d.add_argument("--checkpoint-every", type=int, default=50, help="steps")
    d.add_argument("--max-steps", type=int, help="stop after this many steps (resume later)")
    d.add_argument("--device", help="default: cuda when available, else cpu")
    d.set_defaults(func=_run_distill)

    g = sub.add_parser("generate", help="sound from CAVP features with Diff-Foley's LDM, in resumable shards")
    g.add_argument("--features", required=True, help="feature folder (<clip_id>.npz), e.g. FEATURES/cu for VGG-CU")
    g.add_argument("--manifest", help="only this manifest's clips (e.g. test_original.csv: the teacher's folder "
                                      "holds every clip's features)")
    g.add_argument("--ldm", required=True, help="a ldm_epoch240.ckpt-format file")
    g.add_argument("--model-options", metavar="JSON", help='loader keywords, e.g. {"ldm": {...}} (inline or a file)')
    g.add_argument("--out", required=True, help="folder for shard_*.npz and generation.json")
    g.add_argument("--samples", type=int, default=10, help="sounds per clip (the paper: 10)")
    g.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps")
    g.add_argument("--seed", type=int, default=0, help="seeds are drawn per (seed, clip, sample)")
    g.add_argument("--window", type=int, default=32, help="4-fps frames per sound (32: Diff-Foley's 8.192 s)")
    g.add_argument("--batch-size", type=int, default=32, help="sounds per generator batch")
    g.add_argument("--clips-per-shard", type=int, default=16)
    g.add_argument("--griffin-lim-iters", type=int, default=32, help="vocoder iterations")
    g.add_argument("--device", help="default: cuda when available, else cpu")
    g.set_defaults(func=_run_generate)
    return p


def _load_teacher(args: argparse.Namespace):
    from cinefoley.models.cavp import load_cavp

    return load_cavp(args.cavp, stage_blocks=tuple(args.cavp_stage_blocks), base_channels=args.cavp_base_channels)


def _run_manifest(args: argparse.Namespace) -> int:
    from cinefoley.worlds.vggsound.manifest import build_manifest

    print(build_manifest(args.csv, args.video_dir, args.out, split=args.split, fmt=args.fmt))
    return 0


def _run_frames(args: argparse.Namespace) -> int:
    from cinefoley.worlds.vggsound.frames import write_frame_store

    print(write_frame_store(args.manifest, args.out, workers=args.workers, clips_per_shard=args.clips_per_shard))
    return 0


def _run_testsets(args: argparse.Namespace) -> int:
    from cinefoley.worlds.vggsound.testsets import build_vggsound_testsets

    print(build_vggsound_testsets(args.manifest, args.out, split=args.split, seed=args.seed, a1=args.a1,
                                  a2=args.a2, max_frames=args.max_frames))
    return 0


def _run_features(args: argparse.Namespace) -> int:
    from cinefoley.distributed import process_group, rank_device
    from cinefoley.worlds.vggsound.features import extract_features

    with process_group() as (rank, _):
        encoder = _load_teacher(args).to(rank_device(args.device or _device_default()))
        report = extract_features(args.manifest, encoder, args.out, variation_manifests=args.variation_manifest,
                                  max_frames=args.max_frames, workers=args.workers, frames=args.frames)
    if rank == 0:
        print(report)
    return 0


def _run_distill(args: argparse.Namespace) -> int:
    import pandas as pd

    from cinefoley.distributed import process_group, rank_device
    from cinefoley.worlds.vggsound.stream import StreamDistillConfig, distill_vggsound

    with process_group() as (rank, world):
        cfg = StreamDistillConfig(variation=args.variation, k=args.k, a1=args.a1, a2=args.a2, epochs=args.epochs,
                                  batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed,
                                  device=rank_device(args.device or _device_default()),
                                  checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                                  split=None if args.split == "all" else args.split, n_frames=args.n_frames,
                                  num_workers=args.workers, frames=args.frames)
        _, history = distill_vggsound(_load_teacher(args), args.manifest, args.features, args.out, cfg)
    if rank == 0:
        out = Path(args.out)
        unusable = len(pd.read_csv(out / "unusable.csv"))
        done = (out / "student_state.pt").exists()
        last = history["step_loss"][-1] if history["step_loss"] else float("nan")
        print(f"{'finished' if done else 'stopped'} after {len(history['step_loss'])} steps on {world} rank(s), "
              f"last L_p {last:.4f}; {unusable} clips skipped (listed in {out / 'unusable.csv'}); run in {out}")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from cinefoley.distributed import process_group, rank_device
    from cinefoley.generate import GenerationConfig, generate_set, window_features
    from cinefoley.models.ldm import load_ldm
    from cinefoley.own_cli import model_options
    from cinefoley.utils import atomic_write_json
    from cinefoley.worlds.vggsound.features import read_feature_dir
    from cinefoley.worlds.vggsound.manifest import read_rows

    clip_ids = read_rows(Path(args.manifest))[0]["clip_id"].tolist() if args.manifest else None
    feats = read_feature_dir(args.features, clip_ids)
    missing = [(c, f"no feature file {Path(args.features) / c}.npz") for c in clip_ids or [] if c not in feats]
    feats, short = window_features(feats, args.window)
    left_out = missing + short
    if not feats:
        raise SystemExit(f"{args.features}: no clip with features for a {args.window}-frame window "
                         f"({len(left_out)} left out, e.g. {left_out[:1]})")
    cfg = GenerationConfig(samples_per_clip=args.samples, steps=args.steps, seed=args.seed,
                           batch_size=args.batch_size, clips_per_shard=args.clips_per_shard,
                           griffin_lim_iters=args.griffin_lim_iters)
    with process_group() as (rank, _):
        model = load_ldm(args.ldm, **model_options(args.model_options).get("ldm", {}))
        out = generate_set(model.to(rank_device(args.device or _device_default())), feats, args.out, cfg)
    if rank == 0:
        if left_out:
            atomic_write_json(out / "left_out.json", left_out)
        print(f"{len(feats)} clips x {args.samples} sounds in {out}; {len(left_out)} clips left out"
              + (f" (listed in {out / 'left_out.json'})" if left_out else ""))
    return 0
