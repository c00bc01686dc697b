"""The notebooks run headlessly under the smoke profile, and their checked cells reproduce (nbval)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cinefoley.reproduce import notebooks, run_notebooks

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke_run")
    timings = run_notebooks("smoke", out)
    return out, timings


def test_every_notebook_ran(smoke_run):
    out, timings = smoke_run
    assert set(timings) == {p.name for p in notebooks()}
    record = json.loads((out / "reproduce.json").read_text())
    assert record["config"]["profile"] == "smoke"
    for name in timings:
        nb = nbformat.read(out / "notebooks" / name, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"{name}: {errors[:1]}"


def test_01_paired_data_outputs(smoke_run):
    out, _ = smoke_run
    for fig in ("01_world.png", "01_paired_clip.png", "01_visible_fraction.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    for kind in ("original", "cu", "cm"):
        assert (out / "testsets" / f"test_{kind}.csv").exists()


def test_checked_cells_reproduce_under_nbval(smoke_run):
    out, _ = smoke_run
    executed = sorted((out / "notebooks").glob("*.ipynb"))
    checked = [p for p in executed if "NBVAL_CHECK_OUTPUT" in p.read_text()]
    assert checked, "at least one notebook has output-checked cells"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", *map(str, checked)], capture_output=True, text=True,
                            cwd=out)
    assert result.returncode == 0, result.stdout[-3000:]
