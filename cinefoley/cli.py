"""The ``cinefoley`` command line: ``cinefoley <command> --help`` for each command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _world(args) -> int:
    from dataclasses import replace

    from cinefoley.worlds.cinetoy.render import build_world
    from cinefoley.worlds.cinetoy.world import get_profile

    cfg = get_profile(args.profile).world
    overrides = {k: v for k, v in (("size", args.size), ("duration", args.duration), ("seed", args.seed))
                 if v is not None}
    cfg = replace(cfg, **overrides)
    manifest = build_world(args.out, cfg)
    report = json.loads((Path(args.out) / "build_report.json").read_text())
    print(f"{len(manifest)} clips in {args.out}/manifest.csv ({report['rendered']} rendered, "
          f"{len(report['failed'])} failed)")
    return 1 if report["failed"] else 0


def _testsets(args) -> int:
    from cinefoley.media.clips import read_manifest
    from cinefoley.testsets import write_testsets

    paths = write_testsets(read_manifest(args.manifest), args.out, split=args.split, seed=args.seed,
                           a1=args.a1, a2=args.a2)
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


#: ``cinefoley reproduce`` option -> the notebooks' parameter it sets (the real tier's files)
REAL_TIER = {"vggsound_csv": "vggsound_csv", "video_dir": "video_dir", "cavp": "cavp_ckpt", "ldm": "ldm_ckpt",
             "eval_classifier": "classifier_ckpt", "panns": "panns_ckpt", "vggish": "vggish_ckpt",
             "workers": "num_workers", "frames_dir": "frames_dir"}


def _reproduce(args) -> int:
    from cinefoley.reproduce import run_notebooks

    given = {param: getattr(args, opt) for opt, param in REAL_TIER.items() if getattr(args, opt) is not None}
    if args.world == "cinetoy" and given:
        raise SystemExit(f"reproduce: {sorted(given)} are for --world vggsound")
    paths = {k: str(Path(v).resolve()) if k != "num_workers" else v for k, v in given.items()}
    run_notebooks(args.profile, args.out, only=args.only, extra_parameters={"world": args.world, **paths}, echo=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cinefoley", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("world", help="build the CineToy world (mp4 + wav + manifest.csv)")
    p.add_argument("--profile", default="demo", help="smoke, demo or paper (sets the number of clips)")
    p.add_argument("--out", required=True, help="folder to write the world into")
    p.add_argument("--size", type=int, help="frame size in pixels (e.g. 224 for real-tier-shaped runs)")
    p.add_argument("--duration", type=float, help="clip length in seconds (e.g. 8.2)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=_world)

    p = sub.add_parser("testsets", help="write the original / close-up / camera-move test manifests")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--a1", type=float, default=0.4)
    p.add_argument("--a2", type=float, default=0.6)
    p.set_defaults(func=_testsets)

    p = sub.add_parser("reproduce", help="run the notebooks headlessly into <out> (the main job)")
    p.add_argument("--profile", default="demo", help="smoke, demo or paper")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 02")
    p.add_argument("--world", choices=("cinetoy", "vggsound"), default="cinetoy")
    real = p.add_argument_group("the real tier (--world vggsound): your files")
    real.add_argument("--vggsound-csv", help="the official vggsound.csv, or a split list")
    real.add_argument("--video-dir", help="the folder holding your VGGSound videos")
    for opt, name in (("cavp", "cavp_epoch66.ckpt"), ("ldm", "ldm_epoch240.ckpt"),
                      ("eval-classifier", "eval_classifier.ckpt"), ("panns", "Cnn14_16k_mAP=0.438.pth"),
                      ("vggish", "vggish-10086976.pth")):
        real.add_argument(f"--{opt}", metavar="PATH", help=f"a {name}-format file")
    real.add_argument("--workers", type=int, help="processes decoding videos (default 4)")
    real.add_argument("--frames-dir", help="a folder for the 4-fps frame store (docs/vggsound.md, step 3b)")
    p.set_defaults(func=_reproduce)

    from cinefoley.models.check import register as register_checkpoints
    from cinefoley.own_cli import register as register_own
    from cinefoley.study.cli import register as register_study
    from cinefoley.worlds.vggsound.cli import register as register_vggsound

    register_checkpoints(sub)
    register_vggsound(sub)
    register_study(sub)
    register_own(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
