"""Notebooks 01-07 with world="vggsound" on a tiny VGGSound-shaped folder and small Diff-Foley-format checkpoints."""

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from diff_foley_files import CAVP_SMALL, randomize_, save_cavp_file, save_lightning_file, small_cavp
from test_real_extractors import PANNS_SMALL, VGGISH_SMALL, small_panns, small_vggish
from synthetic_vggsound import clip_ids, write_vggsound

from cinefoley.align_classifier import AlignmentClassifier, align_classifier_state_dict, eval_classifier_config
from cinefoley.ldm import build_ldm, diff_foley_ldm_config, ldm_state_dict
from cinefoley.reproduce import run_notebooks

pytestmark = [pytest.mark.notebook, pytest.mark.slow]
NOTEBOOKS = ["01", "02", "03", "04", "05", "06", "07"]
# a small LDM conditioned on CAVP's 512-d features, as the released one is; its VAE downsamples 8x like
# Diff-Foley's, so that the UNet's attention stays cheap on a CPU
LDM_CAVP = diff_foley_ldm_config(
    unet={"model_channels": 32, "channel_mult": [1, 2], "attention_resolutions": [2], "num_res_blocks": 1,
          "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    cond={"origin_dim": 512, "embed_dim": 16},
)
CLASSIFIER_CAVP = eval_classifier_config(
    backbone={"model_channels": 32, "num_heads": 2, "context_dim": 16},
    vae={"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    cond={"origin_dim": 512, "embed_dim": 16},
)


def write_checkpoints(folder):
    folder.mkdir(parents=True)
    paths = {"cavp": folder / "cavp_epoch66.ckpt", "ldm": folder / "ldm_epoch240.ckpt",
             "eval_classifier": folder / "eval_classifier.ckpt", "panns": folder / "Cnn14_16k_mAP=0.438.pth",
             "vggish": folder / "vggish-10086976.pth"}
    save_cavp_file(small_cavp(), paths["cavp"])
    save_lightning_file(ldm_state_dict(randomize_(build_ldm(LDM_CAVP), 1).eval()), paths["ldm"], 240)
    save_lightning_file(align_classifier_state_dict(randomize_(AlignmentClassifier(CLASSIFIER_CAVP), 2).eval()),
                        paths["eval_classifier"], 12)
    torch.save({"model": small_panns(3).state_dict()}, paths["panns"])
    torch.save(small_vggish(4).state_dict(), paths["vggish"])
    return paths


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("vggsound_data")
    # 8.5 s at 4 fps with sound: Align Acc scores 8.192 s (32 feature frames, 512 mel frames)
    write_vggsound(data, seconds=8.5, fps=4.0, audio=True)
    ckpts = write_checkpoints(data / "diff_foley_ckpt")
    # papermill passes parameters as JSON: tuples become lists, as a user's YAML would give them
    options = json.loads(json.dumps({"cavp": CAVP_SMALL, "ldm": {"config": LDM_CAVP},
                                     "eval_classifier": {"config": CLASSIFIER_CAVP}, "panns": PANNS_SMALL,
                                     "vggish": VGGISH_SMALL}))
    out = tmp_path_factory.mktemp("vggsound_run")
    timings = run_notebooks("smoke", out, only=NOTEBOOKS, extra_parameters={
        "world": "vggsound", "vggsound_csv": str(data / "vggsound.csv"), "video_dir": str(data / "videos"),
        "cavp_ckpt": str(ckpts["cavp"]), "ldm_ckpt": str(ckpts["ldm"]), "classifier_ckpt": str(ckpts["eval_classifier"]),
        "panns_ckpt": str(ckpts["panns"]), "vggish_ckpt": str(ckpts["vggish"]),
        "model_options": options, "num_workers": 1})
    return out, timings


def cell_outputs(out, name):
    nb = nbformat.read(out / "notebooks" / name, as_version=4)
    return [c.get("outputs", []) for c in nb.cells if c.cell_type == "code"]


def test_every_notebook_ran_its_real_step_and_skipped_cinetoy(real_run):
    out, timings = real_run
    assert len(timings) == len(NOTEBOOKS)
    for name in timings:
        outputs = cell_outputs(out, name)
        assert not [o for cell in outputs for o in cell if o.output_type == "error"], name
        nb = nbformat.read(out / "notebooks" / name, as_version=4)
        (i,) = [k for k, c in enumerate(nb.cells) if c.get("id") == "vggsound-world"]
        if not name.startswith("07"):  # 07 only takes its pairs from the real tier, then runs on
            assert all(not c.get("outputs") for c in nb.cells[i + 1:] if c.cell_type == "code"), name
    assert not (out / "world").exists()  # CineToy was never built


def test_01_writes_manifest_testsets_and_figure(real_run):
    out, _ = real_run
    for kind in ("original", "cu", "cm"):
        df = pd.read_csv(out / "testsets" / f"test_{kind}.csv", dtype={"clip_id": str})
        assert sorted(df.clip_id) == sorted(clip_ids("test"))
    assert (out / "figures" / "01_paired_clip.png").stat().st_size > 5000
    summary = json.loads((out / "01_vggsound.json").read_text())
    assert (summary["videos_found"], summary["videos_missing"], summary["test_clips"]) == (7, 1, 2)


def test_02_checks_every_given_checkpoint(real_run):
    out, _ = real_run
    checks = json.loads((out / "02_checks.json").read_text())
    assert {c["kind"]: c["loads"] for c in checks["checks"]} == {
        "cavp": True, "ldm": True, "eval_classifier": True, "panns": True, "vggish": True}


def test_03_distils_and_tables_the_feature_drift(real_run):
    out, _ = real_run
    run = out / "distill" / "cu@75"
    assert (run / "student_state.pt").exists()
    record = json.loads((run / "distill.json").read_text())
    assert record["results"]["clips"] == 4 and record["results"]["unreadable"] == 1  # the garbage file
    table = pd.read_csv(out / "tables" / "03_feature_similarity.csv")
    assert list(table.columns) == ["test_set", "teacher_on_varied", "student_on_varied", "clips_improved", "clips"]
    assert table.test_set.tolist() == ["original", "cu", "cm"] and (table.clips == 2).all()
    assert table.loc[0, "teacher_on_varied"] == pytest.approx(1.0, abs=1e-5)
    for fig in ("03_loss", "03_feature_similarity"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000


def test_04_generates_every_system_and_test_set(real_run):
    from cinefoley.generate import read_generated

    out, _ = real_run
    for system in ("baseline", "cu@75"):
        for kind in ("original", "cu", "cm"):
            gen = read_generated(out / "generated" / system / kind)
            assert sorted(gen["clip_id"]) == sorted(clip_ids("test"))  # 1 sample per clip under smoke
            assert gen["mel"].shape[1:] == (128, 16 * 32) and np.isfinite(gen["wav"]).all()
    record = json.loads((out / "04_vggsound.json").read_text())
    assert len(record["sets"]) == 6 and not any(record["left_out"].values())
    assert (out / "figures" / "04_examples.png").stat().st_size > 5000


def test_05_scores_table1_with_intervals_and_figure5(real_run):
    from cinefoley.evaluate import METRICS

    out, _ = real_run
    table1 = pd.read_csv(out / "table1.csv")
    assert sorted(zip(table1.test_set, table1.system)) == sorted(
        (t, s) for t in ("original", "cu", "cm") for s in ("baseline", "ours"))
    for m in METRICS:
        assert np.isfinite(table1[m]).all()
        assert (table1[f"{m}_lo"] <= table1[m] + 1e-9).all() and (table1[m] <= table1[f"{m}_hi"] + 1e-9).all()
    assert set(table1.AlignAcc) <= {0.0, 50.0, 100.0}  # two test clips, one sample each
    diff = pd.read_csv(out / "table1_paired_diff.csv")
    assert diff.test_set.tolist() == ["original", "cu", "cm"]
    gain = pd.read_csv(out / "figure5_per_class_align_gain.csv")
    assert list(gain.columns) == ["label", "baseline", "ours", "gain"]
    record = json.loads((out / "05_metrics.json").read_text())
    assert record["results"]["clips_scored"] == 2 and not record["results"]["no_audio"]
    for fig in ("05_table1", "05_figure5_per_class_gain"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5000


def test_06_draws_gradcam_of_teacher_and_student_on_a_close_up(real_run):
    out, _ = real_run
    record = json.loads((out / "06_vggsound.json").read_text())
    (cid,) = record["clips"]  # smoke: one clip
    assert cid == pd.read_csv(out / "testsets" / "test_cu.csv", dtype={"clip_id": str}).clip_id[0]
    assert (out / "figures" / f"06_figure6_gradcam_{cid}.png").stat().st_size > 5000


def test_07_runs_the_study_on_vgg_cm_pairs(real_run):
    from cinefoley.study import read_pairs
    from cinefoley.study.media import probe

    out, _ = real_run
    pairs = read_pairs(out / "study_pairs" / "pairs.csv")
    assert sorted(p.clip_id for p in pairs) == sorted(clip_ids("test"))
    media = probe(out / "study_pairs" / pairs[0].ours.name)
    assert media["sample_rate"] == 16000 and media["duration"] == pytest.approx(8.19, abs=0.15)
    result = json.loads((out / "07_preference_study.json").read_text())
    assert result["results"]["votes"] > 0
