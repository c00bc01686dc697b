"""The seven notebooks with world="vggsound": the same cells as on CineToy, every one run, every figure and
table made, on synthetic VGGSound-shaped videos and small random checkpoints in the released formats."""

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
from notebook_outputs import code_cells, errors, shows
from synthetic_vggsound import clip_ids

from cinefoley.reproduce import notebooks

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_every_cell_of_every_notebook_ran(vggsound_smoke_run):
    out, timings = vggsound_smoke_run
    assert set(timings) == {p.name for p in notebooks()}
    for name in timings:
        assert not errors(out / "notebooks" / name), name
        cells = code_cells(out / "notebooks" / name)
        assert all(c.execution_count is not None for c in cells), name
    assert not (out / "world").exists()  # CineToy was never built


def test_every_figure_and_table_made_on_cinetoy_is_made_on_vggsound(cinetoy_smoke_run, vggsound_smoke_run):
    toy, real = cinetoy_smoke_run[0] / "notebooks", vggsound_smoke_run[0] / "notebooks"
    compared = 0
    for nb in notebooks():
        real_cells = {c.id: c for c in code_cells(real / nb.name)}
        for cell in code_cells(toy / nb.name):
            if cell.id not in real_cells:  # papermill's injected-parameters cell gets a fresh id per run
                continue
            for kind in ("figure", "table"):
                if shows(cell, kind):
                    assert shows(real_cells[cell.id], kind), f"{nb.name} cell {cell.id}: no {kind} on VGGSound"
                    compared += 1
    assert compared >= 15


def test_no_cell_names_a_world_but_the_parameters_and_the_opening_one():
    for nb in notebooks():
        cells = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
        (params,) = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        for c in cells[params + 2:]:
            for word in ("cinetoy", "vggsound", "world =="):
                assert word not in c.source.lower(), f"{nb.name}: {c.source[:80]!r} names {word!r}"
        assert "open_world(world" in cells[params + 1].source


def test_01_writes_the_manifest_and_vgg_cu_cm(vggsound_smoke_run):
    out, _ = vggsound_smoke_run
    originals = pd.read_csv(out / "testsets" / "test_original.csv", dtype={"clip_id": str})
    assert sorted(originals.clip_id) == sorted(clip_ids("test"))
    for kind in ("cu", "cm"):
        varied = pd.read_csv(out / "testsets" / f"test_{kind}.csv", dtype={"clip_id": str})
        assert list(varied.clip_id) == list(originals.clip_id)
        windows = [json.loads(p)["boxes"][0] for p in varied.variation_params]
        # windows are placed on each video's own size and cut 0.4-0.6 of each side
        for (top, left, h, w), height, width in zip(windows, varied.height, varied.width):
            assert 0.35 * height <= h <= 0.65 * height and 0.35 * width <= w <= 0.65 * width
    manifest = pd.read_csv(out / "vggsound" / "manifest.csv")
    assert len(manifest) == 7  # 8 rows of the CSV, one video nobody downloaded


def test_02_checks_every_checkpoint_and_the_referee(vggsound_smoke_run):
    out, _ = vggsound_smoke_run
    record = json.loads((out / "02_checks.json").read_text())
    assert {m["model"]: m["loads"] for m in record["models"]} == {
        "cavp": True, "ldm": True, "eval_classifier": True, "panns": True, "vggish": True}
    cavp = next(m for m in record["models"] if m["model"] == "cavp")
    assert cavp["ignored"] == 4  # the released layout's audio branch, accepted and reported
    checks = pd.DataFrame(record["checks"])
    assert len(checks) == 6 and (checks.n == 2).all() and checks.accuracy.between(0, 1).all()
    assert "sound delayed by 128 ms (half a frame)" in checks.check.tolist()
    first_stage = pd.DataFrame(record["first_stage"])
    assert first_stage["first stage"].iloc[0] == "AutoencoderKL" and first_stage["mel MSE"].iloc[0] >= 0
    assert set(pd.DataFrame(record["generator"]).check) == {"Align Acc (%)"}  # no classifier of VGGSound's labels


def test_03_distils_streamed_and_measures_the_drift(vggsound_smoke_run):
    out, _ = vggsound_smoke_run
    record = json.loads((out / "distill" / "cu@75" / "distill.json").read_text())
    assert record["results"]["clips"] == 4 and record["results"]["unusable"] == 1  # the garbage file
    table = pd.read_csv(out / "tables" / "03_feature_similarity.csv")
    assert table.test_set.tolist() == ["original", "cu", "cm"] and (table.clips == 2).all()
    assert table.loc[0, "teacher_on_varied"] == pytest.approx(1.0, abs=1e-5)
    # a close-up changes what the teacher sees: its features of VGG-CU/CM drift from the full clip's
    assert (table.loc[1:, "teacher_on_varied"] < 0.9999).all()


def test_04_generates_every_system_and_test_set(vggsound_smoke_run):
    from cinefoley.generate import read_generated

    out, _ = vggsound_smoke_run
    for system in ("baseline", "cu@75"):
        for kind in ("original", "cu", "cm"):
            gen = read_generated(out / "generated" / system / kind)
            assert sorted(gen["clip_id"]) == sorted(clip_ids("test"))  # 1 sample per clip under smoke
            assert gen["mel"].shape[1:] == (128, 16 * 32) and np.isfinite(gen["wav"]).all()


def test_05_scores_table1_with_intervals(vggsound_smoke_run):
    from cinefoley.metrics.evaluate import METRICS

    out, _ = vggsound_smoke_run
    table1 = pd.read_csv(out / "table1.csv")
    assert sorted(zip(table1.test_set, table1.system)) == sorted(
        (t, s) for t in ("original", "cu", "cm") for s in ("baseline", "ours"))
    for m in METRICS:
        assert np.isfinite(table1[m]).all()
    assert set(table1.AlignAcc) <= {0.0, 50.0, 100.0}  # two test clips, one sample each
    record = json.loads((out / "05_metrics.json").read_text())
    assert record["results"]["clips_scored"] == 2 and not record["results"]["left_out"]


def test_06_draws_figure6_and_the_box_free_attention_table(vggsound_smoke_run):
    out, _ = vggsound_smoke_run
    cid = pd.read_csv(out / "testsets" / "test_cu.csv", dtype={"clip_id": str}).clip_id[0]
    assert (out / "figures" / f"06_figure6_gradcam_{cid}.png").stat().st_size > 5000
    attention = pd.read_csv(out / "attention_on_object.csv")
    assert "share_on_object" not in attention  # VGGSound has no boxes
    assert attention.target_similarity.between(-1, 1).all() and (attention.clips == 2).all()


def test_07_runs_the_study_on_vgg_cm_pairs(vggsound_smoke_run):
    from cinefoley.study import read_pairs
    from cinefoley.study.media import probe

    out, _ = vggsound_smoke_run
    pairs = read_pairs(out / "study_pairs" / "pairs.csv")
    assert sorted(p.clip_id for p in pairs) == sorted(clip_ids("test"))
    media = probe(out / "study_pairs" / pairs[0].ours.name)
    assert media["sample_rate"] == 16000 and media["duration"] == pytest.approx(8.19, abs=0.15)
    assert json.loads((out / "07_preference_study.json").read_text())["results"]["votes"] > 0
