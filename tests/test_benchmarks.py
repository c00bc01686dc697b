"""The benchmark scripts keep working: each runs at tiny size on the CPU as a subprocess and writes its JSON."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

DISTILL_TINY = ["--clips", "2", "--frames", "4", "--size", "32", "--steps", "2", "--warmup", "1", "--video-clips", "2"]
GENERATE_TINY = ["--tiny", "--steps", "2", "--batch", "2", "--repeats", "1", "--naive-samples", "1",
                 "--librosa-clips", "1"]


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield (importlib.import_module("bench_distill"), importlib.import_module("bench_generate"),
               importlib.import_module("bench_frame_store"))
    finally:
        sys.path.remove(str(BENCHMARKS))


def run_benchmark(script: str, args: list[str], tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / f"{Path(script).stem}.json"
    # one thread: OpenMP spin-waiting on a shared CI machine costs more than a second thread gains here
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--device", "cpu", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def check_distill(r: dict, stdout: str, steps: int) -> None:
    assert set(r["paths"]) == {"naive", "fast"}
    naive, fast = r["paths"]["naive"], r["paths"]["fast"]
    assert (naive["teacher_targets"], naive["batched_variations"]) == ("forward", False)
    assert (fast["teacher_targets"], fast["batched_variations"]) == ("cached", True)
    for p in (naive, fast):
        assert p["clips_per_s"] > 0 and len(p["step_ms"]) == steps and min(p["step_ms"]) > 0
        assert p["mfu"] is None  # no known peak on a CPU
    assert r["speedup_fast"] == pytest.approx(fast["clips_per_s"] / naive["clips_per_s"])
    # the naive step also runs the teacher forward
    assert r["flops_per_clip"]["naive"] > r["flops_per_clip"]["fast"] > 0
    assert r["teacher_cache_s"] > 0 and r["teacher_cache_clips_per_s"] > 0
    data = r["data_path"]
    assert data["files"] == 2 and min(data["decode_clips_per_s"], data["crop_clips_per_s"], data["clips_per_s"]) > 0
    assert "vs naive" in stdout and "teacher-feature caching" in stdout


def check_generate(r: dict, stdout: str, latent: list[int]) -> None:
    assert r["latent"] == latent and set(r["paths"]) == {"naive", "batched"}
    for p in r["paths"].values():
        assert p["samples_per_s"] > 0 and set(p["ms_per_sample"]) == {"unet", "vae", "vocoder"}
        assert min(p["ms_per_sample"].values()) > 0
        assert sum(p["share"].values()) == pytest.approx(1.0)
        assert 1e3 / sum(p["ms_per_sample"].values()) == pytest.approx(p["samples_per_s"])
    assert "librosa" in r["paths"]["naive"]["vocoder"] and "extrapolated" in stdout
    assert r["paths"]["naive"]["batch"] == 1 and r["paths"]["batched"]["batch"] == 2
    assert r["speedup_batched"] > 0 and r["unet_speedup_batched"] > 0
    assert r["flops_per_sample"]["unet"] > 0 and r["flops_per_sample"]["vae"] > 0


def test_bench_distill_toy_runs(tmp_path):
    check_distill(*run_benchmark("bench_distill.py", ["--encoder", "toy", *DISTILL_TINY], tmp_path), steps=2)


def test_bench_generate_toy_runs(tmp_path):
    r, stdout = run_benchmark("bench_generate.py", ["--model", "toy", *GENERATE_TINY], tmp_path)
    check_generate(r, stdout, latent=[4, 16, 16])
    assert r["mel"] == [128, 128]


@pytest.mark.slow
def test_bench_distill_cavp_runs(tmp_path):
    r, stdout = run_benchmark("bench_distill.py", ["--encoder", "cavp", "--base-channels", "4", *DISTILL_TINY],
                              tmp_path)
    check_distill(r, stdout, steps=2)
    assert r["base_channels"] == 4


@pytest.mark.slow
def test_bench_generate_diff_foley_runs(tmp_path):
    r, stdout = run_benchmark("bench_generate.py", ["--model", "diff-foley", *GENERATE_TINY], tmp_path)
    check_generate(r, stdout, latent=[4, 16, 64])  # Diff-Foley's window: 32 frames, mel 128 x 512
    assert r["mel"] == [128, 512] and r["frames"] == 32


def test_bench_vggsound_stream_runs(tmp_path):
    r, stdout = run_benchmark("bench_vggsound_stream.py", ["--clips", "2", "--height", "32", "--width", "48",
                                                           "--fps", "8", "--seconds", "2.6", "--frames", "6",
                                                           "--size", "32", "--batch", "2", "--workers", "0", "1"],
                              tmp_path)
    assert r["clips"] == 2 and set(r["clips_per_s"]) == {"0", "1"} and min(r["clips_per_s"].values()) > 0
    assert "workers=1:" in stdout


def test_bench_frame_store_runs(tmp_path):
    r, stdout = run_benchmark("bench_frame_store.py", ["--clips", "2", "--height", "32", "--width", "48",
                                                       "--fps", "8", "--seconds", "2.6", "--frames", "6",
                                                       "--size", "32"], tmp_path)
    assert set(r["paths"]) == {"mp4_today", "mp4", "store"} and min(p["clips_per_s"] for p in r["paths"].values()) > 0
    assert r["speedup_store_vs_mp4_today"] == pytest.approx(r["paths"]["store"]["clips_per_s"]
                                                             / r["paths"]["mp4_today"]["clips_per_s"], rel=1e-3)
    assert r["bytes_per_clip"]["jpeg_q95_444"] > 0 and r["bytes_per_clip"]["png"] > 0
    assert r["cavp_input_diff"]["max"] <= 24 and r["threads"] == 1
    assert "store vs today's mp4 path" in stdout


def test_peak_table_matches_device_names(bench_modules):
    bench_distill, *_ = bench_modules
    peak = bench_distill.peak_bf16_flops
    assert peak("NVIDIA H100 80GB HBM3") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA H200") == 989e12
    assert peak("Tesla T4") is None


def test_step_clock_is_shared_with_the_deep_copied_student(bench_modules):
    import copy

    import torch

    bench_distill, *_ = bench_modules
    clock = bench_distill.StepClock()
    teacher = bench_distill.BenchEncoder(torch.nn.Linear(2, 2), clock).eval()
    student = copy.deepcopy(teacher).train()
    video = torch.zeros(1, 2, dtype=torch.uint8)
    teacher(video)  # the teacher's calls are not steps
    student(video)
    student(video)
    assert student.clock is clock and len(clock.stamps) == 2
    assert student.net is not teacher.net


def test_gpu_all_is_valid_bash_and_passes_flags_the_scripts_accept(bench_modules):
    script = (BENCHMARKS / "gpu_all.sh").read_text()
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_all.sh")]).returncode == 0
    joined = script.replace("\\\n", " ")
    calls = {name: [] for name in ("bench_distill", "bench_generate", "bench_vocoder", "bench_frame_store")}
    for name, rest in re.findall(r"benchmarks/(bench_\w+)\.py([^\n]*)", joined):
        calls[name].append([a for a in shlex.split(rest) if "$" not in a])
    assert len(calls["bench_distill"]) == 2 and len(calls["bench_generate"]) == 2 and calls["bench_vocoder"]
    assert {"--compile", "cavp"} <= set(sum(calls["bench_distill"], []))
    assert {"--compile", "diff-foley"} <= set(sum(calls["bench_generate"], []))
    for module, name in zip(bench_modules, ("bench_distill", "bench_generate", "bench_frame_store")):
        for args in calls[name]:
            parsed = module.parse_args(args + ["--json", "x.json"])
            assert parsed.device == "cuda"
    assert calls["bench_frame_store"]
