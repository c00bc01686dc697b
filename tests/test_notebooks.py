"""The notebooks run headlessly under the smoke profile, and their checked cells reproduce (nbval)."""

import json
import subprocess
import sys

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


def test_02_to_06_write_their_models_tables_and_figures(smoke_run):
    import pandas as pd

    from cinefoley.evaluate import METRICS

    out, _ = smoke_run
    checks = json.loads((out / "02_checks.json").read_text())
    assert checks["models"] == "trained" and 0.0 <= checks["audio_classifier_acc"] <= 1.0
    assert (out / "distill" / "cu@75" / "distill.json").exists()
    table1 = pd.read_csv(out / "table1.csv")
    assert sorted(zip(table1.test_set, table1.system)) == sorted(
        (t, s) for t in ("original", "cu", "cm") for s in ("baseline", "ours"))
    for m in METRICS:
        assert (table1[f"{m}_lo"] <= table1[m] + 1e-9).all() and (table1[m] <= table1[f"{m}_hi"] + 1e-9).all()
    for name in ("table3", "table4", "table1_paired_diff", "figure5_per_class_align_gain", "attention_on_object"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    for fig in ("02_generator_samples", "03_loss", "03_feature_similarity", "04_examples", "05_table1",
                "05_figure5_per_class_gain", "06_figure6_gradcam"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000


def test_07_runs_the_study_on_generated_pairs(smoke_run):
    import pandas as pd

    from cinefoley.study import read_pairs
    from cinefoley.study.media import probe

    out, _ = smoke_run
    pairs = read_pairs(out / "study_pairs" / "pairs.csv")
    test_ids = pd.read_csv(out / "testsets" / "test_cm.csv", dtype={"clip_id": str}).clip_id.tolist()
    assert [p.clip_id for p in pairs] == test_ids[: len(pairs)] and len(pairs) == 4
    assert probe(out / "study_pairs" / pairs[0].ours.name)["sample_rate"] == 16000
    result = json.loads((out / "07_preference_study.json").read_text())
    assert result["results"]["votes"] > 0


def test_checked_cells_reproduce_under_nbval(smoke_run):
    out, _ = smoke_run
    executed = sorted((out / "notebooks").glob("*.ipynb"))
    checked = [p for p in executed if "NBVAL_CHECK_OUTPUT" in p.read_text()]
    assert checked, "at least one notebook has output-checked cells"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-current-env", *map(str, checked)], capture_output=True, text=True,
                            cwd=out)
    assert result.returncode == 0, result.stdout[-3000:]
