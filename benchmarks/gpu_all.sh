#!/usr/bin/env bash
# Every benchmark at real size on one GPU, each under its own time limit (about 8 minutes in all).
#
#   bash benchmarks/gpu_all.sh [OUT_DIR]      # OUT_DIR: the argument, else $OUT, else ./bench_out
#
# Writes <benchmark>.json for each benchmark and gpu_all.log (everything printed) into OUT_DIR; a
# benchmark stopped at its limit leaves the JSON of the stages it finished. Installs nothing.
# Python: $PYTHON, else the repo's .venv/bin/python, else python3.
# BENCH_VIDEO_DIR: a folder with toy/ and cavp/ mp4s for the data-path measurement (default: each
# distillation benchmark writes its own with PyAV).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench_out}}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_all.log") 2>&1

if [[ -n "${PYTHON:-}" ]]; then py=$PYTHON
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
toy_videos=() cavp_videos=()
if [[ -n "${BENCH_VIDEO_DIR:-}" ]]; then
  toy_videos=(--video-dir "$BENCH_VIDEO_DIR/toy") cavp_videos=(--video-dir "$BENCH_VIDEO_DIR/cavp")
fi

nvidia-smi -L
"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA",
torch.version.cuda, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'

bench() {  # name, limit in seconds, script and its arguments
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "=== $name (limit $limit s)"
  timeout --kill-after=10 "$limit" "$py" "$@" --json "$out/$name.json"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s$( ((rc == 124)) && echo ' (stopped at its limit)')"
}

# the real-size ones first; each compiled variant is measured in the same run as its eager baseline.
# Limits: about 1.2x the times seen on one H100 (2026-11-26; generate_toy then ran past 60 s), 480 s in all;
# frame_store (not yet run on a GPU) writes its clips with PyAV first (about 30 s on one CPU core).
bench distill_cavp 150 benchmarks/bench_distill.py --encoder cavp --device cuda --steps 8 --warmup 3 --compile \
  "${cavp_videos[@]}"
bench generate_diff_foley 180 benchmarks/bench_generate.py --model diff-foley --device cuda --batch 32 \
  --repeats 2 --compile
bench vocoder 30 benchmarks/bench_vocoder.py --librosa-clips 2 --batch 8 --cuda-batch 64
bench distill_toy 30 benchmarks/bench_distill.py --encoder toy --device cuda --steps 10 "${toy_videos[@]}"
bench generate_toy 90 benchmarks/bench_generate.py --model toy --device cuda --batch 32 --compile
# the data path per CPU core, frame store vs mp4, and the store decoded and resized on the GPU
bench frame_store 150 benchmarks/bench_frame_store.py --device cuda --clips 8

echo "=== summary ($SECONDS s in all)"
"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path

for path in sorted(Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    if path.stem == "vocoder":
        print("vocoder clips/s:", ", ".join(f"{k[:-12]} {v:.1f}" for k, v in r.items() if k.endswith("_clips_per_s")))
        continue
    unit = "samples_per_s" if r["benchmark"] == "generate" else "clips_per_s"
    rates = ", ".join(f"{k} {p[unit]:.1f}" + (f" (MFU {100 * p['mfu']:.1f} %)" if p.get("mfu") else "")
                      for k, p in r["paths"].items())
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k.startswith(("speedup", "unet_speedup")))
    print(f"{path.stem} {unit.replace('_per_s', '/s')}: {rates}; {ratios}")
EOF
