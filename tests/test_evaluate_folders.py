"""``cinefoley evaluate``: Table 1's metrics for two folders, notebook 05's numbers, nothing dropped silently."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from own_media import broken_copy, write_clip

from cinefoley.cli import main
from cinefoley.generate import GenerationConfig, generate_set, read_generated
from cinefoley.media.audio import load_audio
from cinefoley.media.clips import read_manifest
from cinefoley.media.video import load_video
from cinefoley.metrics.evaluate import METRICS, Scoreboard, paired_differences
from cinefoley.metrics.folders import evaluate_folders, load_referees
from cinefoley.models.model_io import load_model
from cinefoley.worlds.cinetoy.world import SHIPPED

N_BOOT = 8


def write_folder(generated: dict[str, np.ndarray], folder):
    """A generated set (:func:`cinefoley.generate.read_generated`) as files: ``<clip>-s<k>.wav`` (float, so the
    samples are exact) and the generator's mel beside each (``<clip>-s<k>.mel.npz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for clip, k, mel, wav in zip(generated["clip_id"], generated["sample"], generated["mel"], generated["wav"]):
        sf.write(folder / f"{clip}-s{k}.wav", wav, 16000, subtype="FLOAT")
        np.savez(folder / f"{clip}-s{k}.mel.npz", mel=mel)
    return folder


def write_references(wavs: dict[str, np.ndarray], feats: dict[str, torch.Tensor], root):
    (root / "reference").mkdir(parents=True)
    (root / "features").mkdir()
    for clip, wav in wavs.items():
        sf.write(root / "reference" / f"{clip}.wav", wav, 16000, subtype="FLOAT")
        np.save(root / "features" / f"{clip}.npy", feats[clip].numpy())
    return root / "reference", root / "features"


@pytest.fixture(scope="module")
def generated(tiny_world, tmp_path_factory):
    """The tiny world's test clips: teacher features, real sound, and two generated sets (the baseline's and
    a nudged encoder's, 2 samples per clip) made by the functions notebook 04 calls, with the shipped models."""
    root = tmp_path_factory.mktemp("evaluate")
    manifest = read_manifest(tiny_world / "manifest.csv")
    test = manifest[manifest.split == "test"]
    models = {n: load_model(SHIPPED / f"{n}.pt") for n in ("teacher", "generator")}
    videos = torch.stack([load_video(tiny_world / p, n_frames=8, size=64) for p in test.video_path])
    with torch.no_grad():
        feats = dict(zip(test.clip_id.astype(str), models["teacher"](videos)))
    wavs = {c: load_audio(tiny_world / p, duration=2.048) for c, p in zip(test.clip_id.astype(str), test.audio_path)}
    nudged = {c: f + 0.05 * torch.randn(f.shape, generator=torch.Generator().manual_seed(1)) for c, f in feats.items()}
    cfg = GenerationConfig(samples_per_clip=2, steps=2)
    for system, f in (("baseline", feats), ("ours", nudged)):
        generate_set(models["generator"], f, root / "generated" / system, cfg, progress=False)
    reference, features = write_references(wavs, feats, root)
    folders = {s: write_folder(read_generated(root / "generated" / s), root / f"{s}_files")
               for s in ("baseline", "ours")}
    return SimpleNamespace(root=root, feats=feats, wavs=wavs, reference=reference, features=features, **folders)


class SmokeWorld:
    """What :class:`~cinefoley.metrics.evaluate.Scoreboard` asks of a world, for one test set (``x``)."""

    def __init__(self, data, referees):
        self.data, self.referees = data, referees
        self.settings, self.seed = SimpleNamespace(n_boot=N_BOOT), 0

    def reference_audio(self):
        return self.data.wavs

    def window(self, feats):
        return feats, []

    def features(self, system, kind):
        return self.data.feats

    def generated(self, system, kind):
        return read_generated(self.data.root / "generated" / system)


def _same(row, intervals):
    for m, iv in intervals.items():
        assert (row[m], row[f"{m}_lo"], row[f"{m}_hi"]) == (iv.estimate, iv.lo, iv.hi), m


def test_evaluate_gives_notebook_05s_numbers(generated, tmp_path):
    referees, _, _ = load_referees(cache_dir=tmp_path / "cache")
    board = Scoreboard(SmokeWorld(generated, referees))
    result = evaluate_folders(generated.ours, generated.reference, baseline=generated.baseline, referees=referees,
                              features=generated.features, n_boot=N_BOOT, seed=0)
    table = result.table.set_index("system")
    _same(table.loc["generated"], board.scored("ours", "x"))
    _same(table.loc["baseline"], board.scored("baseline", "x"))
    paired = paired_differences(board.features("baseline", "x"), board.features("ours", "x"), board.reference,
                                n_boot=N_BOOT, seed=0)
    _same(result.paired.iloc[0], paired)
    assert result.left_out == 0 and result.report["generated"]["align_acc"]["mel"] == "the generator's mel files"
    assert result.report["generated"]["sounds"] == 12 and result.report["generated"]["clips"] == 6

    # the command writes the same numbers (CSV round trip included)
    code = main(["evaluate", "--generated", str(generated.ours), "--baseline", str(generated.baseline),
                 "--reference", str(generated.reference), "--features", str(generated.features),
                 "--out", str(tmp_path / "out"), "--n-boot", str(N_BOOT)])
    assert code == 0
    scores = pd.read_csv(tmp_path / "out" / "scores.csv").set_index("system")
    _same(scores.loc["generated"], board.scored("ours", "x"))
    _same(pd.read_csv(tmp_path / "out" / "paired_diff.csv").iloc[0], paired)
    record = json.loads((tmp_path / "out" / "evaluate.json").read_text())
    assert record["config"]["n_boot"] == N_BOOT and "torch" in record["versions"]


def test_without_the_generators_mels_align_acc_judges_the_sounds_own(generated, tmp_path):
    for p in generated.ours.glob("*.wav"):
        (tmp_path / "gen").mkdir(exist_ok=True)
        (tmp_path / "gen" / p.name).write_bytes(p.read_bytes())
    referees, _, _ = load_referees(cache_dir=tmp_path / "cache")
    result = evaluate_folders(tmp_path / "gen", generated.reference, referees=referees, features=generated.features,
                              n_boot=5)
    assert result.report["generated"]["align_acc"]["mel"] == "Diff-Foley's mel of each sound"
    assert 0 <= result.table.loc[0, "AlignAcc"] <= 100


def _tone(seconds, hz, seed=0):
    t = np.arange(int(seconds * 16000)) / 16000
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (0.3 * np.sin(2 * np.pi * hz * t) * (np.sin(2 * np.pi * 3 * t) > 0) + noise).astype(np.float32)


def test_every_file_left_out_is_named_with_its_reason(tmp_path, capsys):
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir(), gen.mkdir()
    for k, name in enumerate(("door", "gunshot", "rain", "steps")):
        sf.write(ref / f"{name}.wav", _tone(2.048, 300 + 150 * k, k), 16000)
    write_clip(ref / "car.mp4", fps=12, seconds=2.048, tone_hz=900)  # a reference may be a video
    broken_copy(ref / "rain.wav", ref / "rain.wav")  # cut short: unreadable
    for k, name in enumerate(("door-s0", "door-s1", "gunshot", "car", "rain", "stray")):
        sf.write(gen / f"{name}.wav", _tone(2.032, 500 + 90 * k, 10 + k), 16000)
    write_clip(gen / "door-s0.mp4", fps=12, seconds=2.048)  # cinefoley foley writes one beside each wav
    sf.write(gen / "steps.wav", _tone(1.0, 700), 16000)  # a second short
    broken_copy(gen / "gunshot.wav", gen / "door-s2.wav")

    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--out", str(tmp_path / "out"),
                 "--n-boot", "10", "--videos", str(ref)])
    printed = capsys.readouterr()
    assert code == 1
    report = json.loads((tmp_path / "out" / "evaluate.json").read_text())["results"]["report"]
    g = report["generated"]
    assert g["sounds"] == 4 and g["clips"] == 3  # door (2 samples), gunshot, car
    assert [u["file"] for u in g["unmatched"]] == ["rain.wav", "stray.wav"]
    assert "its reference rain cannot be read" in g["unmatched"][0]["reason"]
    assert [u["file"] for u in g["unreadable"]] == ["door-s2.wav"] and "truncated" in g["unreadable"][0]["reason"]
    assert g["length differs"] == [{"file": "steps.wav", "seconds": 1.0, "reference_seconds": 2.048}]
    assert g["videos passed over (an audio file of the same name is read)"] == ["door-s0.mp4"]
    assert g["references without a generated sound (not scored)"] == ["steps"]
    assert [u["file"] for u in report["reference"]["unreadable"]] == ["rain.wav"]
    assert "Align Acc" not in printed.err and not g["align_acc"]["computed"]
    for name in ("stray.wav", "door-s2.wav", "steps.wav", "rain.wav", "door-s0.mp4"):
        assert name in printed.out, name
    assert "4 generated file(s) left out" in printed.err
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert np.isfinite(scores[list(METRICS[:5])].to_numpy()).all() and np.isnan(scores.loc[0, "AlignAcc"])


def test_paired_comparison_names_the_items_one_folder_lacks(generated, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    kept = sorted(generated.baseline.glob("*.wav"))[2:]
    for p in kept:
        (partial / p.name).write_bytes(p.read_bytes())
    referees, _, _ = load_referees(cache_dir=tmp_path / "cache")
    result = evaluate_folders(generated.ours, generated.reference, baseline=partial, referees=referees, n_boot=5)
    dropped = result.report["paired"]["only_in_one_folder"]
    assert dropped["generated"] == [p.name for p in sorted(generated.ours.glob("*.wav"))[:2]]
    assert dropped["baseline"] == [] and result.report["paired"]["items"] == 10 and result.left_out == 2
    assert result.paired.loc[0, "items"] == "10 items" and np.isnan(result.paired.loc[0, "AlignAcc"])


def test_the_real_referees_score_from_their_files(tmp_path):
    from diff_foley_files import REAL_TIER_OPTIONS, write_real_tier_checkpoints

    ckpt = write_real_tier_checkpoints(tmp_path / "ckpt")
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir(), gen.mkdir()
    for k in range(3):
        write_clip(ref / f"clip{k}.mp4", fps=8, seconds=8.5, size=(40, 56), tone_hz=300 + 200 * k, first=30 * k)
        for s in range(2):
            sf.write(gen / f"clip{k}-s{s}.wav", _tone(8.5, 400 + 100 * k + 50 * s, s), 16000)
    options = json.dumps({k: REAL_TIER_OPTIONS[k] for k in ("panns", "vggish", "eval_classifier", "cavp")})
    files = ["--panns", str(ckpt["panns"]), "--vggish", str(ckpt["vggish"]), "--eval-classifier",
             str(ckpt["eval_classifier"]), "--cavp", str(ckpt["cavp"]), "--model-options", options]
    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--videos", str(ref),
                 "--out", str(tmp_path / "out"), "--n-boot", "10", *files])
    assert code == 0
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert np.isfinite(scores[list(METRICS)].to_numpy()).all()
    record = json.loads((tmp_path / "out" / "evaluate.json").read_text())
    assert "Diff-Foley's alignment classifier" in record["config"]["referees"]
    assert record["results"]["report"]["generated"]["align_acc"]["mel"] == "Diff-Foley's mel of each sound"

    # Diff-Foley's classifier reads 8.192 s: shorter sounds are scored without Align Acc, and it says why
    for p in list(gen.glob("*.wav")) + list(ref.glob("*")):
        sf.write(p.with_suffix(".wav"), _tone(4.0, 500), 16000)
    code = main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--videos", str(ref),
                 "--out", str(tmp_path / "short"), "--n-boot", "5", *files])
    record = json.loads((tmp_path / "short" / "evaluate.json").read_text())
    align = record["results"]["report"]["generated"]["align_acc"]
    assert code == 0 and not align["computed"] and ">= 512" in align["reason"]


@pytest.mark.notebook
@pytest.mark.slow
def test_evaluate_on_notebook_04s_sounds_gives_notebook_05s_table_1(cinetoy_smoke_run, tmp_path):
    from cinefoley.distill import MAIN_RUN
    from cinefoley.testsets import TEST_SETS
    from cinefoley.worlds import open_world

    out, _ = cinetoy_smoke_run
    w = open_world("cinetoy", out, profile="smoke")
    feats, _ = w.window(w.features("baseline", "original"))
    reference, features = write_references(w.reference_audio(), feats, tmp_path)
    table1 = pd.read_csv(out / "table1.csv").set_index(["test_set", "system"])
    paired = pd.read_csv(out / "table1_paired_diff.csv").set_index("test_set")
    columns = [f"{m}{suffix}" for m in METRICS for suffix in ("", "_lo", "_hi")]
    for kind in TEST_SETS:
        folders = {s: write_folder(w.generated(s, kind), tmp_path / kind / s) for s in ("baseline", MAIN_RUN)}
        code = main(["evaluate", "--generated", str(folders[MAIN_RUN]), "--baseline", str(folders["baseline"]),
                     "--reference", str(reference), "--features", str(features), "--models", str(out / "models"),
                     "--out", str(tmp_path / kind / "scores"), "--n-boot", str(w.settings.n_boot),
                     "--seed", str(w.seed)])
        assert code == 0
        scores = pd.read_csv(tmp_path / kind / "scores" / "scores.csv").set_index("system")
        for label, system in (("generated", "ours"), ("baseline", "baseline")):
            assert scores.loc[label, columns].tolist() == table1.loc[(kind, system), columns].tolist(), (kind, label)
        diff = pd.read_csv(tmp_path / kind / "scores" / "paired_diff.csv").iloc[0]
        assert diff[columns].tolist() == paired.loc[kind, columns].tolist(), kind


def test_sounds_of_other_lengths_are_each_scored_whole(tmp_path):
    from cinefoley.metrics.evaluate import extract
    from cinefoley.metrics.folders import extract_by_length

    referees, _, _ = load_referees(cache_dir=tmp_path / "cache")
    network = referees.extractor.extractor  # not the cache: that would hand back what the first call computed
    wavs = [_tone(s, 300 + 100 * k, k) for k, s in enumerate((2.032, 1.0, 2.032, 1.5, 1.0))]
    together = extract_by_length(network, list("abcde"), wavs)
    for i, wav in enumerate(wavs):  # CineToy's extractor cuts a batch to its shortest sound: never across lengths
        alone = extract(network, ["x"], [wav])
        np.testing.assert_allclose(together.clip_emb[i], alone.clip_emb[0], atol=1e-5)
        np.testing.assert_allclose(together.logits[i], alone.logits[0], atol=1e-5)
        np.testing.assert_allclose(together.frames[i], alone.frames[0], atol=1e-5)
