"""Data path of streamed VGGSound distillation (clips/s): decode at 4 fps + variation + resize to 224.

    python benchmarks/bench_vggsound_stream.py [--clips 8] [--height 360 --width 640] [--fps 25]
                                               [--frames 40] [--workers 0 2] [--video-dir DIR] [--json out.json]

Runs :class:`cinefoley.worlds.vggsound.stream.StreamedPairs` exactly as
:func:`~cinefoley.worlds.vggsound.stream.distill_vggsound` does, without the student: what the loader
alone can feed. Synthetic mp4s shaped like VGGSound
(10 s, 640x360, 25 fps, H.264) are written first, or ``--video-dir`` points at real ones. The teacher
features are random (only their length matters here). Each worker count is timed over all clips,
after one warm-up pass, worker start-up included; ``k`` = 0.75 f_cu, the paper's main setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_distill import synthetic_frames  # noqa: E402

from cinefoley.distill import rank_batches  # noqa: E402
from cinefoley.media.video import write_video  # noqa: E402
from cinefoley.utils import atomic_savez  # noqa: E402
from cinefoley.worlds.vggsound.stream import StreamClip, StreamDistillConfig, StreamedPairs  # noqa: E402


def write_vggsound_like(folder: Path, n: int, height: int, width: int, fps: float, seconds: float) -> list[Path]:
    length = int(round(seconds * fps))
    size = max(height, width)
    paths = [folder / f"clip{i:03d}_000000.mp4" for i in range(n)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: write_video(paths[i], synthetic_frames(length, size, i)[:, :height, :width], fps),
                      range(n)))
    return paths


def benchmark_videos(args, folder: Path) -> list[Path]:
    """The first ``args.clips`` mp4s of ``args.video_dir``, or as many synthetic VGGSound-like clips written to ``folder``."""
    if args.video_dir:
        paths = sorted(args.video_dir.glob("*.mp4"))[:args.clips]
        if not paths:
            raise FileNotFoundError(f"{args.video_dir}: no .mp4 files")
        return paths
    started = time.perf_counter()
    paths = write_vggsound_like(folder, args.clips, args.height, args.width, args.fps, args.seconds)
    print(f"wrote {len(paths)} synthetic clips in {time.perf_counter() - started:.1f} s")
    return paths


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate of the synthetic mp4s")
    ap.add_argument("--seconds", type=float, default=10.25)
    ap.add_argument("--frames", type=int, default=40, help="4-fps frames per clip")
    ap.add_argument("--size", type=int, default=224, help="encoder input size")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--video-dir", type=Path, help="time these mp4s instead of synthetic ones")
    ap.add_argument("--device", default="cpu", help="accepted for symmetry with the other benchmarks; unused")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = benchmark_videos(args, tmp / "videos")
        rng = np.random.default_rng(0)
        clips = []
        for p in paths:
            feature = tmp / "feats" / f"{p.stem}.npz"
            atomic_savez(feature, feat=rng.standard_normal((args.frames, 512)).astype(np.float32))
            clips.append(StreamClip(p.stem, p, 0.0, feature))

        result = {"clips": len(clips), "frames": args.frames, "size": args.size, "batch": args.batch,
                  "source": str(args.video_dir) if args.video_dir else
                  f"synthetic {args.width}x{args.height} @ {args.fps:g} fps, {args.seconds:g} s",
                  "clips_per_s": {}}
        for workers in args.workers:
            cfg = StreamDistillConfig(variation="cu", k=0.75, batch_size=args.batch, n_frames=args.frames,
                                      size=args.size, num_workers=workers)
            source = StreamedPairs(clips, cfg)
            for epoch in (0, 1):  # epoch 0 warms decord and the page cache up
                started = time.perf_counter()
                got = 0
                for batch in source.batches(cfg, epoch, rank_batches(cfg, epoch, len(clips), 0)):
                    if batch.failed:
                        raise RuntimeError(f"clips failed to decode: {batch.failed}")
                    got += len(batch)
                seconds = time.perf_counter() - started
            result["clips_per_s"][str(workers)] = round(got / seconds, 3)
            print(f"workers={workers}: {got} clips in {seconds:.2f} s = {got / seconds:.2f} clips/s "
                  f"(decode {args.frames} frames at 4 fps + variation + resize to {args.size})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
