"""The data path per core, frame store vs mp4, in one run: decode at 4 fps + variation + resize to 224.

    python benchmarks/bench_frame_store.py [--clips 8] [--height 360 --width 640] [--fps 25] [--frames 40]
                                           [--device cpu|cuda] [--video-dir DIR] [--json out.json]

Synthetic mp4s shaped like VGGSound (10 s, 640x360, 25 fps, H.264, textured and moving) are written
first, or ``--video-dir`` points at real ones; then, in one process on one thread (so clips/s is per
core), each clip goes through:

* ``mp4_today``: the mp4 decoded (:func:`~cinefoley.media.video.load_video`), the variation at native
  size (:func:`~cinefoley.variations.apply`), squash-resized to 224: the data path before the frame store;
* ``mp4``: the mp4 decoded, then :func:`~cinefoley.models.cavp.varied_input` (crop and both resizes in one);
* ``store``: the clip's JPEGs read from the frame store and decoded, then ``varied_input``: the data
  path of ``--frames STORE``. With ``--device cuda`` the JPEGs are decoded by nvJPEG and cropped and
  resized on the GPU (``store_<device>``, timed after the CPU paths).

Variations are drawn as in training (k = 0.75, f_cu). Also measured: writing the store (clips/s of one
process, the frames stage), its bytes per clip (JPEG q95 4:4:4) against PNG, and how far the store
path's CAVP input is from today's (grey levels at 224). Each path gets a warm-up clip first.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vggsound_stream import benchmark_videos  # noqa: E402

from cinefoley.media.video import load_video  # noqa: E402
from cinefoley.models.cavp import squash_resize, varied_input  # noqa: E402
from cinefoley.variations import VariationSampler, apply  # noqa: E402
from cinefoley.worlds.vggsound.frames import FrameStore, decode_frames, write_frame_store  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate of the synthetic mp4s")
    ap.add_argument("--seconds", type=float, default=10.25)
    ap.add_argument("--frames", type=int, default=40, help="4-fps frames per clip")
    ap.add_argument("--size", type=int, default=224, help="encoder input size")
    ap.add_argument("--video-dir", type=Path, help="time these mp4s instead of synthetic ones")
    ap.add_argument("--device", default="cpu", help="cuda adds the store path decoded and resized on the GPU")
    ap.add_argument("--json", type=Path)
    return ap.parse_args(argv)


def timed(paths: list, fn) -> float:
    """Clips/s of ``fn`` over ``paths`` after one warm-up call."""
    fn(paths[0])
    started = time.perf_counter()
    for p in paths:
        fn(p)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - started)


def png_bytes(store: FrameStore, clip_id: str) -> int:
    """Bytes of the clip's frames as PNG (PIL, default compression), for the format comparison."""
    from PIL import Image

    total = 0
    for frame in decode_frames(store.jpegs(clip_id)):
        buf = io.BytesIO()
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        total += buf.tell()
    return total


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = benchmark_videos(args, tmp / "videos")
        manifest = tmp / "manifest.csv"
        with manifest.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "split", "video_path", "label", "start_s", "n_frames"])
            writer.writerows([[v.stem, "train", str(v.resolve()), "bench", 0.0, args.frames] for v in videos])

        started = time.perf_counter()
        report = write_frame_store(manifest, tmp / "store", workers=1, progress=False)
        write_s = time.perf_counter() - started
        if report.summary["unreadable"]:
            raise RuntimeError(f"clips failed to decode: see {tmp / 'store' / 'unreadable.csv'}")
        store = FrameStore(tmp / "store")
        clips = {v: store.clips[v.stem][1] for v in videos}
        sampler = VariationSampler("cu", k=0.75)
        params = {v: sampler.draw_for_clip(v.stem, 0, 0, args.frames, c["height"], c["width"])
                  for v, c in clips.items()}

        def mp4_today(v):
            frames = load_video(v, n_frames=args.frames)
            return squash_resize(frames if params[v] is None else apply(frames, params[v]), args.size)

        def mp4(v):
            return varied_input(load_video(v, n_frames=args.frames), params[v], args.size)

        def from_store(v, device="cpu"):
            return varied_input(decode_frames(store.jpegs(v.stem, args.frames), device), params[v], args.size)

        rates = {"mp4_today": timed(videos, mp4_today), "mp4": timed(videos, mp4), "store": timed(videos, from_store)}
        if args.device != "cpu":
            rates[f"store_{args.device}"] = timed(videos, lambda v: from_store(v, args.device))
        diffs = [(from_store(v).int() - mp4_today(v).int()).abs().float() for v in videos]
        jpeg = report.summary["bytes_per_clip"]
        png = sum(png_bytes(store, v.stem) for v in videos[:2]) / min(2, len(videos))

    result = {"benchmark": "frame_store", "device": args.device, "clips": len(videos), "frames": args.frames,
              "size": args.size, "threads": torch.get_num_threads(),
              "source": str(args.video_dir) if args.video_dir else
              f"synthetic {args.width}x{args.height} @ {args.fps:g} fps, {args.seconds:g} s",
              "paths": {k: {"clips_per_s": round(v, 3)} for k, v in rates.items()},
              "speedup_store_vs_mp4_today": rates["store"] / rates["mp4_today"],
              "speedup_store_vs_mp4": rates["store"] / rates["mp4"],
              "store_write_clips_per_s": len(videos) / write_s,
              "bytes_per_clip": {"jpeg_q95_444": jpeg, "png": png}, "png_over_jpeg": png / jpeg,
              "vggsound_store_bytes": report.summary["vggsound_extrapolated_bytes"],
              "cavp_input_diff": {"max": max(d.max().item() for d in diffs),
                                  "mean": sum(d.mean().item() for d in diffs) / len(diffs)}}
    for name, rate in rates.items():
        print(f"{name:>14}: {rate:7.2f} clips/s per core")
    print(f"store vs today's mp4 path: {result['speedup_store_vs_mp4_today']:.1f}x per core "
          f"(vs the mp4 with the one-pass variation: {result['speedup_store_vs_mp4']:.1f}x); target >= 10x")
    print(f"frame store: written at {result['store_write_clips_per_s']:.2f} clips/s by one process; "
          f"{jpeg / 1e6:.2f} MB per clip as JPEG q95 4:4:4, {png / 1e6:.2f} MB as PNG ({png / jpeg:.1f}x); "
          f"all of VGGSound ≈ {result['vggsound_store_bytes'] / 1e12:.2f} TB (extrapolated)")
    print(f"CAVP input from the store vs today's path: max {result['cavp_input_diff']['max']:.0f}, "
          f"mean {result['cavp_input_diff']['mean']:.2f} grey levels")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
