#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent).
# torch/torchvision are installed first and explicitly so that pip takes the pinned releases.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
echo "[setup] .venv: torch 2.14.1, torchvision 0.29.1 and cinefoley with its dependencies (first time: a few minutes)"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# -qq: pip's progress and this machine's notes on its package mirrors are not for the reader; errors still show
pip=(.venv/bin/python -m pip install -qq --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" -e ".[dev]"
touch .venv/.installed
echo "[setup] done: $(.venv/bin/python --version), $(.venv/bin/cinefoley --version 2>/dev/null || echo cinefoley)"
