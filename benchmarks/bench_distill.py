"""Self-distillation throughput (clips/s): the naive reference path against the cached, batched one.

    python benchmarks/bench_distill.py [--encoder toy|cavp] [--device cuda] [--steps 10] [--compile]
                                       [--json out.json]

Both paths run :func:`cinefoley.distill.distill` itself, in the same process, on the same clips:

* **naive** (the reference of issue 3): ``distill(..., teacher_targets="forward",
  batched_variations=False)``: a teacher forward every step, variations clip by clip on the CPU,
  fp32 (on CUDA the student's autocast is switched off for this path);
* **fast**: ``teacher_targets="cached", batched_variations=True``: c_t read from the on-disk cache,
  one ``apply_batch`` call on the device; on CUDA distill()'s bf16 autocast and channels-last
  convolution weights (``--no-channels-last`` to compare);
* **fast + compile** (``--compile``): the fast path with the student's forward through ``torch.compile``.

Only steady-state steps are timed: the time between the student's forward calls of consecutive
steps (every step of distill() ends in ``loss.item()``, so the GPU is done with a step before the
next one starts), after ``--warmup`` steps. The one-off teacher-feature caching is timed apart.
Also reported: FLOPs per clip (``torch.utils.flop_counter``) and, on a GPU of known bf16 peak, the
model-FLOPs utilisation; the data path (mp4 decoding at 4 fps with ``cinefoley.media.video.load_video``
plus batched crops), on files written here with ``cinefoley.media.video.write_video`` or ``--video-dir``.

Encoders: ``toy`` = :class:`~cinefoley.models.cinetoy.encoders.ToyVideoEncoder` on 8 x 64 x 64 clips; ``cavp`` =
CAVP's SlowOnly ResNet3D-50 (:class:`~cinefoley.models.cavp.CAVPVideoEncoder`), random weights,
32 clips x 16 frames x 224 px by default (on a CPU shrink it: ``--base-channels 4 --size 32``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cinefoley.distill import DistillConfig, cache_teacher_features, distill, distill_loss
from cinefoley.models.cavp import CAVPVideoEncoder
from cinefoley.models.cinetoy.encoders import ToyVideoEncoder, ToyVideoEncoderConfig
from cinefoley.utils import atomic_write_json, versions
from cinefoley.variations import VariationSampler, apply_batch
from cinefoley.media.video import load_video, write_video

#: Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' data sheets, matched by
#: substring of ``torch.cuda.get_device_name``; the first match wins, so the specific names lead.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("A100", 312e12),
)

ENCODER_DEFAULTS = {  # frames, size, source-video fps of the data-path files
    "toy": (8, 64, 4.0),  # CineToy's own files are written at 4 fps
    "cavp": (16, 224, 25.0),  # VGGSound-like sources, sampled down to 4 fps
}


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None when the name is not in :data:`PEAK_BF16_FLOPS`."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def utilisation(flops_per_s: float, device: torch.device) -> float | None:
    """Model-FLOPs utilisation against the card's dense bf16 peak (None when the peak is unknown)."""
    peak = peak_bf16_flops(device_name(device)) if device.type == "cuda" else None
    return flops_per_s / peak if peak else None


def fmt_mfu(mfu: float | None) -> str:
    return "unknown" if mfu is None else f"{100 * mfu:.1f} %"


def channels_last(module: nn.Module) -> nn.Module:
    """Convolution weights in channels-last layout (``channels_last_3d`` for Conv3d), in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return module


# ---------------------------------------------------------------------------------------------
# the encoder as distill() sees it

class StepClock:
    """Times of the student's forward calls: one per distill() step.

    The teacher and its deep-copied student share one clock (``__deepcopy__`` returns it).
    """

    def __init__(self):
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def __deepcopy__(self, memo) -> "StepClock":
        return self


def _forward(net: nn.Module, video: torch.Tensor) -> torch.Tensor:
    return net(video)


@functools.cache
def _compiled_forward():
    return torch.compile(_forward)


class BenchEncoder(nn.Module):
    """A video encoder wrapped for timing: uint8 clips scaled to [0, 1] (CAVP's forward takes floats).

    Training-mode calls (the student's) tick ``clock``; with ``fp32`` the call runs with autocast
    off (distill() autocasts the student to bf16 on CUDA); with ``compile_student`` the training-mode
    calls go through ``torch.compile`` (the teacher's caching pass stays eager).
    """

    def __init__(self, net: nn.Module, clock: StepClock, *, fp32: bool = False, compile_student: bool = False):
        super().__init__()
        self.net, self.clock, self.fp32, self.compile_student = net, clock, fp32, compile_student

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.clock.tick()
        if video.dtype == torch.uint8:
            video = video.float().div_(255.0)
        forward = _compiled_forward() if self.compile_student and self.training else _forward
        with torch.autocast(video.device.type, enabled=False) if self.fp32 else nullcontext():
            return forward(self.net, video)


def build_encoder(args) -> nn.Module:
    torch.manual_seed(0)
    if args.encoder == "toy":
        return ToyVideoEncoder(ToyVideoEncoderConfig(input_size=args.size))
    return CAVPVideoEncoder(base_channels=args.base_channels)


def flops_per_clip(net: nn.Module, clip: torch.Tensor, *, teacher_forward: bool) -> int:
    """FLOPs of one clip's distillation step: student forward + backward (+ a teacher forward)."""
    probe = copy.deepcopy(net).train()
    x = clip.float().div(255.0)
    with FlopCounterMode(display=False) as counter:
        c_s = probe(x)
        distill_loss(torch.randn_like(c_s), c_s).backward()
        if teacher_forward:
            with torch.no_grad():
                probe.eval()(x)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------
# measurements

def time_path(name: str, base: nn.Module, videos: torch.Tensor, clip_ids: list[str], work: Path,
              feature_dir: Path, args, device: torch.device, *, naive: bool, compiled: bool = False) -> dict:
    """Steady-state clips/s of one distill() configuration."""
    clock = StepClock()
    net = copy.deepcopy(base)
    cuda = device.type == "cuda"
    if not naive and cuda and args.channels_last:
        channels_last(net)
    teacher = BenchEncoder(net, clock, fp32=naive, compile_student=compiled)
    cfg = DistillConfig(batch_size=args.clips, device=str(device), epochs=1,
                        max_steps=args.warmup + args.steps + 1, checkpoint_every=10**9)
    targets = "forward" if naive else "cached"
    release_memory(device)
    started = time.perf_counter()
    distill(teacher, videos, clip_ids, work / name, cfg, feature_dir=feature_dir, teacher_targets=targets,
            batched_variations=not naive, progress=False)
    shutil.rmtree(work / name)  # the checkpoint distill() leaves (student + AdamW state)
    step_s = np.diff(clock.stamps)[args.warmup:args.warmup + args.steps]
    return {"clips_per_s": args.clips * len(step_s) / float(step_s.sum()),
            "step_ms_median": 1e3 * float(np.median(step_s)),
            "step_ms": [round(1e3 * float(s), 3) for s in step_s],
            "warmup_s": clock.stamps[args.warmup] - started,
            "precision": "fp32" if naive or not cuda else "bf16 autocast",
            "channels_last": bool(not naive and cuda and args.channels_last),
            "compiled": compiled,
            "teacher_targets": targets, "batched_variations": not naive}


def synthetic_frames(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8: a textured background panning 1 px a frame and a gliding coloured
    square, so the encoder has motion and texture to code, as in filmed video."""
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 160, size, dtype=np.float32)
    texture = rng.randint(0, 64, (size, size + n, 3)).astype(np.float32)
    background = 0.6 * ramp[:, None, None] + 0.4 * ramp[None, :, None]  # (size, size, 1), at most 160
    side = max(2, size // 4)
    start, speed = rng.randint(0, size - side, 2), rng.uniform(-2, 2, 2)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i] = (background + texture[:, i:i + size]).astype(np.uint8)
        top, left = ((start + speed * i) % (size - side)).astype(int)
        frames[i, top:top + side, left:left + side] = rng.randint(0, 256, 3)
    return frames


def write_clips(folder: Path, n: int, n_frames: int, size: int, fps: float, workers: int) -> list[Path]:
    """``n`` mp4s long enough for ``n_frames`` frames at 4 fps, written at ``fps`` (H.264, PyAV)."""
    length = int(np.ceil((n_frames + 1) / 4.0 * fps))
    paths = [folder / f"clip_{i:03d}.mp4" for i in range(n)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: write_video(paths[i], synthetic_frames(length, size, i), fps), range(n)))
    return paths


def time_data_path(paths: list[Path], args, device: torch.device) -> dict:
    """clips/s of decoding at 4 fps (one thread, and ``--decode-workers``) and of batched crops."""
    def decode(p):
        return load_video(p, fps=4.0, n_frames=args.frames, size=args.size)

    decode(paths[0])  # warm-up: decord's first open loads its codecs
    out = {"files": len(paths), "decode_workers": args.decode_workers}
    started = time.perf_counter()
    clips = [decode(p) for p in paths]
    out["decode_clips_per_s_1_worker"] = len(paths) / (time.perf_counter() - started)
    with ThreadPoolExecutor(args.decode_workers) as pool:
        started = time.perf_counter()
        clips = list(pool.map(decode, paths))
        out["decode_clips_per_s"] = len(paths) / (time.perf_counter() - started)

    batch = torch.stack(clips).to(device)
    sampler = VariationSampler("cu&cm", k=1.0)
    params = sampler.draw_batch(len(batch), args.frames, args.size, args.size, torch.Generator().manual_seed(0))
    apply_batch(batch, params)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(3):
        apply_batch(batch, params)
    synchronize(device)
    out["crop_clips_per_s"] = 3 * len(batch) / (time.perf_counter() - started)
    out["clips_per_s"] = 1.0 / (1.0 / out["decode_clips_per_s"] + 1.0 / out["crop_clips_per_s"])
    return out


def time_batch_transfer(videos: torch.Tensor, batch: int, device: torch.device) -> float:
    """ms to gather a batch of uint8 clips on the host and copy it to the device, as distill() does per step."""
    idx = torch.randperm(len(videos))[:batch]
    videos[idx].to(device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(3):
        videos[idx].to(device)
    synchronize(device)
    return 1e3 * (time.perf_counter() - started) / 3


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(ENCODER_DEFAULTS), default="toy")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips", type=int, default=32, help="clips per step (distill's batch)")
    parser.add_argument("--frames", type=int, default=None, help="frames per clip (toy 8, cavp 16)")
    parser.add_argument("--size", type=int, default=None, help="frame size in px (toy 64, cavp 224)")
    parser.add_argument("--base-channels", type=int, default=64, help="SlowOnly width (cavp; 64 = R50)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per path before the timed ones")
    parser.add_argument("--compile", action="store_true", help="also time the fast path with a compiled student")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep the default memory layout on the CUDA fast path")
    parser.add_argument("--video-dir", type=Path, default=None, help="decode these mp4s instead of synthetic ones")
    parser.add_argument("--video-clips", type=int, default=16, help="synthetic mp4s to write and decode")
    parser.add_argument("--video-fps", type=float, default=None, help="frame rate of the synthetic mp4s")
    parser.add_argument("--decode-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here (after every stage)")
    args = parser.parse_args(argv)
    frames, size, fps = ENCODER_DEFAULTS[args.encoder]
    args.frames = args.frames or frames
    args.size = args.size or size
    args.video_fps = args.video_fps or fps
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    base = build_encoder(args)
    n = args.clips * (args.warmup + args.steps + 1)  # one epoch covers every step: no epoch-end checkpoint inside
    videos = torch.randint(0, 256, (n, args.frames, 3, args.size, args.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    clip_ids = [f"clip{i:05d}" for i in range(n)]
    results = {"benchmark": "distill", "encoder": args.encoder, "device": str(device),
               "device_name": device_name(device), "clips": args.clips, "frames": args.frames, "size": args.size,
               "base_channels": args.base_channels if args.encoder == "cavp" else None,
               "steps": args.steps, "warmup": args.warmup, "pool_clips": n,
               "parameters": sum(p.numel() for p in base.parameters()),
               "cudnn_benchmark": True, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "torch_threads": torch.get_num_threads(), "versions": versions(), "paths": {}}

    def save():
        if args.json:
            atomic_write_json(args.json, results)

    title = (f"{args.encoder} encoder ({results['parameters'] / 1e6:.2f} M parameters), {args.clips} clips x "
             f"{args.frames} frames x {args.size} px per step, {device} ({results['device_name']})")
    print(f"distillation benchmark: {title}; {args.steps} timed steps after {args.warmup} warm-up", flush=True)

    on_device = base.to(device)
    per_clip = {naive: flops_per_clip(on_device, videos[:1].to(device), teacher_forward=naive)
                for naive in (True, False)}
    results["flops_per_clip"] = {"naive": per_clip[True], "fast": per_clip[False]}
    base = on_device.cpu()
    release_memory(device)

    with tempfile.TemporaryDirectory(prefix="bench_distill_") as tmp:
        work = Path(tmp)
        feature_dir = work / "teacher_feats"
        teacher = BenchEncoder(copy.deepcopy(base), StepClock())
        synchronize(device)
        started = time.perf_counter()
        cache_teacher_features(teacher, videos, clip_ids, feature_dir, batch_size=args.clips, device=device,
                               progress=False)
        synchronize(device)
        results["teacher_cache_s"] = time.perf_counter() - started
        results["teacher_cache_clips_per_s"] = n / results["teacher_cache_s"]
        del teacher
        results["batch_transfer_ms"] = time_batch_transfer(videos, args.clips, device)
        save()
        print_setup(results)

        def measure(name: str, naive: bool, compiled: bool = False) -> None:
            path = time_path(name, base, videos, clip_ids, work, feature_dir, args, device,
                             naive=naive, compiled=compiled)
            achieved = path["clips_per_s"] * per_clip[naive]
            path["tflops"] = achieved / 1e12
            path["mfu"] = utilisation(achieved, device)
            results["paths"][name] = path
            if name != "naive":
                results[f"speedup_{name}"] = path["clips_per_s"] / results["paths"]["naive"]["clips_per_s"]
            save()
            print_path(results, name)

        print(f"  {'path':58s} {'clips/s':>9s} {'step ms':>8s} {'TFLOP/s':>8s} {'MFU':>8s} {'vs naive':>8s}")
        measure("naive", naive=True)
        measure("fast", naive=False)

        if args.video_dir:
            paths = sorted(args.video_dir.glob("*.mp4"))
            if not paths:
                raise FileNotFoundError(f"{args.video_dir}: no .mp4 files to decode")
            source = str(args.video_dir)
        else:
            paths = write_clips(work / "videos", args.video_clips, args.frames, args.size, args.video_fps,
                                args.decode_workers)
            source = f"synthetic, written at {args.video_fps:g} fps, {args.size} px"
        results["data_path"] = dict(time_data_path(paths, args, device), source=source)
        save()
        print_data_path(results["data_path"])

        if args.compile:  # last: its warm-up holds the compilation, the longest stage
            measure("fast_compiled", naive=False, compiled=True)
    return results


def print_setup(r: dict) -> None:
    print(f"  GFLOPs per clip: naive {r['flops_per_clip']['naive'] / 1e9:.2f}, "
          f"fast {r['flops_per_clip']['fast'] / 1e9:.2f} (student fwd+bwd; naive adds the teacher fwd)")
    print(f"  teacher-feature caching (one-off, not in the steps): {r['pool_clips']} clips in "
          f"{r['teacher_cache_s']:.2f} s = {r['teacher_cache_clips_per_s']:.1f} clips/s")
    print(f"  host gather + copy of one uint8 batch to {r['device']}: {r['batch_transfer_ms']:.1f} ms per step",
          flush=True)


def print_path(r: dict, name: str) -> None:
    p = r["paths"][name]
    label = {"naive": "naive: teacher fwd, per-clip CPU crops, fp32",
             "fast": "fast: cached c_t, batched crops" + (", bf16" if p["precision"] != "fp32" else "")
             + (", channels-last" if p["channels_last"] else ""),
             "fast_compiled": "fast + torch.compile(student)"}[name]
    print(f"  {label:58s} {p['clips_per_s']:9.2f} {p['step_ms_median']:8.1f} {p['tflops']:8.3f} "
          f"{fmt_mfu(p['mfu']):>8s} {p['clips_per_s'] / r['paths']['naive']['clips_per_s']:7.2f}x"
          f"   (warm-up {p['warmup_s']:.1f} s)", flush=True)


def print_data_path(d: dict) -> None:
    print(f"  data path ({d['files']} mp4s, {d['source']}; 4-fps sampling): decode "
          f"{d['decode_clips_per_s_1_worker']:.1f} clips/s with 1 worker, {d['decode_clips_per_s']:.1f} with "
          f"{d['decode_workers']}; batched crops {d['crop_clips_per_s']:.1f} clips/s; together "
          f"{d['clips_per_s']:.1f} clips/s", flush=True)


if __name__ == "__main__":
    main()
