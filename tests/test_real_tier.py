"""VGGSound pipeline end to end on small real files: manifest -> VGG-CU/CM test sets -> CAVP features."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from diff_foley_files import CAVP_SMALL, save_cavp_file, small_cavp
from torchrun import torchrun_cli

from cinefoley.testsets import load_params
from cinefoley.variations import params_for_clip
from cinefoley.worlds.vggsound.manifest import build_manifest
from cinefoley.cli import main as cli_main
from cinefoley.worlds.vggsound.features import extract_features
from cinefoley.worlds.vggsound import testsets as vggsound_testsets
from cinefoley.worlds.vggsound.testsets import build_vggsound_testsets, clip_frames, probe_video
from cinefoley.models.cavp import varied_input
from cinefoley.media.video import load_video, write_video

# (YouTube ID, start, (H, W)); 2.6 s at 8 fps gives 10 frames at 4 fps
VIDEOS = [("land-scape", 1, (64, 96)), ("port_rait", 30, (96, 64)), ("square", 2, (80, 80))]
OFFICIAL_CSV = ("land-scape,1,dog barking,test\n"
                'port_rait,30,"engine accelerating, revving, vroom",test\n'
                "square,2,people marching,test\n"
                "garbage,5,church bell ringing,test\n"
                "not-downloaded,7,cat purring,test\n")
N_FRAMES = 10


def cli(*argv: str) -> int:
    return cli_main(list(argv))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("vggsound")
    rng = np.random.default_rng(0)
    for ytid, start, (h, w) in VIDEOS:
        frames = rng.integers(0, 256, (21, h, w, 3), dtype=np.uint8)
        frames[:, : h // 2] //= 3  # some structure, so that crops change what the encoder sees
        write_video(root / "videos" / f"{ytid}_{start:06d}.mp4", frames, fps=8.0)
    (root / "videos" / "garbage_000005.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (root / "vggsound.csv").write_text(OFFICIAL_CSV)
    report = build_manifest(root / "vggsound.csv", root / "videos", root / "manifest.csv")
    assert (report.found, report.missing) == (4, 1)
    shutil.copy(root / "manifest.csv", root / "manifest_as_built.csv")
    assert cli("vggsound", "testsets", "--manifest", str(root / "manifest.csv"), "--out", str(root / "testsets"),
               "--seed", "3") == 0
    cavp = small_cavp(seed=5)
    save_cavp_file(cavp, root / "cavp_epoch66.ckpt")
    return root, cavp


def test_probe_reads_size_and_length_from_the_header(dataset):
    root, _ = dataset
    header = probe_video(root / "videos" / "port_rait_000030.mp4")
    assert (header.height, header.width) == (96, 64)
    assert header.duration_s == pytest.approx(21 / 8, abs=1e-3)
    assert clip_frames(header.duration_s) == N_FRAMES and clip_frames(header.duration_s, max_frames=4) == 4
    assert clip_frames(header.duration_s, 2.0) == 2


def test_testsets_cache_frame_sizes_and_report_unreadable_videos(dataset, monkeypatch):
    root, _ = dataset
    manifest = pd.read_csv(root / "manifest.csv", dtype={"clip_id": str}).set_index("clip_id")
    assert manifest.loc["land-scape_000001", ["height", "width", "n_frames"]].tolist() == [64, 96, N_FRAMES]
    assert manifest.loc["port_rait_000030", ["height", "width", "n_frames"]].tolist() == [96, 64, N_FRAMES]
    assert pd.isna(manifest.loc["garbage_000005", "n_frames"])
    with (root / "testsets" / "test_unreadable.csv").open() as f:
        (bad,) = list(csv.DictReader(f))
    assert bad["clip_id"] == "garbage_000005" and "header" in bad["reason"]

    sets = {k: pd.read_csv(root / "testsets" / f"test_{k}.csv", dtype={"clip_id": str}).set_index("clip_id")
            for k in ("original", "cu", "cm")}
    assert all(sorted(df.index) == sorted(f"{y}_{s:06d}" for y, s, _ in VIDEOS) for df in sets.values())
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in sets["cu"]["video_path"])
    assert sets["cu"]["audio_path"].isna().all()  # the sound stays in the video
    for cid, (_, _, (h, w)) in zip(sets["cu"].index, VIDEOS):
        cu, cm = load_params(sets["cu"].loc[cid]), load_params(sets["cm"].loc[cid])
        for p in (cu, cm):
            assert (p.n_frames, p.height, p.width) == (N_FRAMES, *sets["cu"].loc[cid, ["height", "width"]])
            assert all(0 <= t and t + bh <= p.height and 0 <= l and l + bw <= p.width for t, l, bh, bw in p.boxes)
        assert len(set(cu.boxes)) == 1 and len(set(cm.boxes)) == N_FRAMES
    assert load_params(sets["cm"].loc["land-scape_000001"]).axis == "horizontal"
    assert load_params(sets["cm"].loc["port_rait_000030"]).axis == "vertical"

    # the headers are cached: a second run reads only the video that failed, and writes the same test sets
    probed = []
    monkeypatch.setattr(vggsound_testsets, "probe_video", lambda path: probed.append(Path(path).name) or probe_video(path))
    report = build_vggsound_testsets(root / "manifest.csv", root / "again", seed=3)
    assert (report.clips, report.failed) == (4, 1) and probed == ["garbage_000005.mp4"]
    for k in ("cu", "cm"):
        assert (root / "again" / f"test_{k}.csv").read_text() == (root / "testsets" / f"test_{k}.csv").read_text()
    raw = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    assert raw["youtube_id"].tolist() == ["land-scape", "port_rait", "square", "garbage"]  # written back as read


def features_argv(root: Path, out: Path, manifest: Path) -> list[str]:
    """``cinefoley vggsound features`` of ``manifest`` and the CU/CM test manifests with the small CAVP."""
    sets = root / "testsets"
    return ["vggsound", "features", "--manifest", str(manifest), "--variation-manifest", str(sets / "test_cu.csv"),
            str(sets / "test_cm.csv"), "--cavp", str(root / "cavp_epoch66.ckpt"),
            "--cavp-stage-blocks", *map(str, CAVP_SMALL["stage_blocks"]),
            "--cavp-base-channels", str(CAVP_SMALL["base_channels"]), "--out", str(out), "--device", "cpu",
            "--workers", "2"]


def test_the_paper_s_recipe_takes_the_shipped_windows(dataset, tmp_path, monkeypatch):
    """With seed 0 (a1 = 0.4, a2 = 0.6) a clip of the shipped recipes gets its row's windows on its own frame:
    a half-size close-up at the top right of 64 x 96 is (0, 48, 32, 48); the camera move runs right to left."""
    from cinefoley.testsets import recipes_table, write_recipes

    root, _ = dataset
    table = recipes_table(["land-scape_000001"])
    table.loc[0, ["cu_r_h", "cu_r_w", "cu_u_top", "cu_u_left", "cm_r_h", "cm_r_w", "cm_reverse"]] = [
        0.5, 0.5, 0.0, 1.0, 0.5, 0.5, 1]
    monkeypatch.setattr(vggsound_testsets, "VGGSOUND_RECIPES", write_recipes(table, tmp_path / "recipes.csv.gz"))
    build_vggsound_testsets(root / "manifest.csv", tmp_path / "sets")
    sets = {k: pd.read_csv(tmp_path / "sets" / f"test_{k}.csv", dtype={"clip_id": str}).set_index("clip_id")
            for k in ("cu", "cm")}
    assert load_params(sets["cu"].loc["land-scape_000001"]).boxes == ((0, 48, 32, 48),) * N_FRAMES
    cm = load_params(sets["cm"].loc["land-scape_000001"]).boxes
    assert (cm[0], cm[-1]) == ((16, 48, 32, 48), (16, 0, 32, 48))
    square = load_params(sets["cu"].loc["square_000002"])  # not in the recipes: the hashed draw
    assert square == params_for_clip("square_000002", "close_up", N_FRAMES, 80, 80)


def test_features_layout_values_and_resume(dataset, tmp_path):
    root, cavp = dataset
    out = tmp_path / "feats"
    sets = root / "testsets"
    argv = features_argv(root, out, sets / "test_original.csv")
    assert cli(*argv) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    ids = sorted(f"{y}_{s:06d}" for y, s, _ in VIDEOS)
    assert files == sorted([f"{c}.npz" for c in ids] + [f"{k}/{c}.npz" for k in ("cm", "cu") for c in ids])

    cu = pd.read_csv(sets / "test_cu.csv", dtype={"clip_id": str}).set_index("clip_id")
    for cid in ids:
        with np.load(out / f"{cid}.npz") as z:
            assert list(z.keys()) == ["feat"]
            feat = z["feat"]
        assert feat.shape == (N_FRAMES, 512) and feat.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(feat, axis=1), 1.0, atol=1e-5)
        video = load_video(cu.loc[cid, "video_path"], n_frames=N_FRAMES)
        np.testing.assert_allclose(feat, cavp.encode(video).numpy(), atol=1e-5)
        varied = np.load(out / "cu" / f"{cid}.npz")["feat"]
        # varied at native size, then 224 (in one pass: test_cavp checks it against apply)
        want = cavp.encode(varied_input(video, load_params(cu.loc[cid]))).numpy()
        np.testing.assert_allclose(varied, want, atol=1e-5)
        assert (varied * feat).sum(axis=1).mean() < 0.9999  # the close-up changed the features

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    (out / "cm" / f"{ids[0]}.npz").unlink()
    assert cli(*argv) == 0
    assert (out / "cm" / f"{ids[0]}.npz").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.exists() and "cm/" + ids[0] not in str(p))
    report = pd.read_json(out / "features_run.json", typ="series")
    assert report["results"] == {"written": 1, "existing": 8, "failed": 0, "ranks": 1}


def feature_files(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): np.load(p)["feat"] for p in sorted(out.rglob("*.npz"))}


@pytest.mark.slow
def test_features_under_torchrun_are_the_files_of_one_process(dataset, tmp_path):
    """2 gloo ranks write the files one process writes; the unreadable clip (4th of the manifest: rank 1's)
    is listed once, by rank 0, with every rank's counts."""
    root, _ = dataset
    assert cli(*features_argv(root, tmp_path / "one", root / "manifest.csv")) == 0
    printed = torchrun_cli(features_argv(root, tmp_path / "two", root / "manifest.csv"))
    assert printed.count("9 feature files written, 0 already there, 1 clips unreadable") == 1
    one, two = feature_files(tmp_path / "one"), feature_files(tmp_path / "two")
    assert list(two) == list(one) and len(one) == 9
    for name, feat in one.items():  # ranks run one thread each, this process more: float rounding apart
        np.testing.assert_allclose(two[name], feat, rtol=1e-5, atol=1e-6, err_msg=name)
    assert (tmp_path / "two" / "unreadable.csv").read_text() == (tmp_path / "one" / "unreadable.csv").read_text()
    assert pd.read_json(tmp_path / "two" / "features_run.json", typ="series")["results"]["ranks"] == 2


def test_features_probe_lengths_and_skip_unreadable_videos(dataset, tmp_path):
    root, cavp = dataset
    videos = tmp_path / "videos"
    shutil.copytree(root / "videos", videos)
    manifest = pd.read_csv(root / "manifest_as_built.csv", dtype=str, keep_default_na=False)
    assert "n_frames" not in manifest  # lengths come from the headers
    manifest["video_path"] = [str(videos / Path(p).name) for p in manifest["video_path"]]
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "feats"
    report = extract_features(tmp_path / "manifest.csv", cavp, out, max_frames=6, workers=1, progress=False)
    assert (report.written, report.existing) == (3, 0)
    assert [f["clip_id"] for f in report.failed] == ["garbage_000005"]
    assert np.load(out / "square_000002.npz")["feat"].shape == (6, 512)

    # a video that breaks after its features were made is reported on the next run, the rest is kept
    (out / "square_000002.npz").unlink()
    (videos / "square_000002.mp4").write_bytes((videos / "square_000002.mp4").read_bytes()[:700])
    report = extract_features(tmp_path / "manifest.csv", cavp, out, max_frames=6, workers=1, progress=False)
    assert (report.written, report.existing) == (0, 2)
    assert sorted(f["clip_id"] for f in report.failed) == ["garbage_000005", "square_000002"]
    with report.unreadable.open() as f:
        rows = {r["clip_id"]: r for r in csv.DictReader(f)}
    assert rows["square_000002"]["video_path"] == str(videos / "square_000002.mp4")
    assert rows["square_000002"]["reason"]
    assert not (out / "square_000002.npz").exists()


def test_variation_manifest_must_hold_variations(dataset, tmp_path):
    root, _ = dataset
    with pytest.raises(ValueError, match="not a CU/CM test manifest"):
        extract_features(root / "manifest.csv", small_cavp(), tmp_path, variation_manifests=[root / "manifest.csv"])
    assert not list(tmp_path.iterdir())  # nothing written
