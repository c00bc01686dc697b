#!/usr/bin/env bash
# `make lab`: JupyterLab on notebooks/, with this project's environment as the notebooks' kernel.
# The kernel "python3" of .venv is registered explicitly (its interpreter by absolute path), so the
# notebooks run in .venv whatever else is installed on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cinefoley)" >/dev/null
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-root)
echo "JupyterLab on notebooks/ (Ctrl-C to stop). Run 01 to 07 in order; each says what it needs first."
exec .venv/bin/jupyter lab --notebook-dir=notebooks --LabApp.extension_manager=readonly "${root[@]}" "$@"
