"""The 4-fps frame store: written once from a manifest, resumable, and read back as the mp4 path reads."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cinefoley.cli import main as cli_main
from cinefoley.errors import MediaError
from cinefoley.utils import atomic_savez
from cinefoley.media.video import load_video
from cinefoley.models.cavp import squash_resize
from cinefoley.worlds.vggsound.features import extract_features
from cinefoley.worlds.vggsound.frames import JPEG_TOLERANCE, FrameStore, shard_name, write_frame_store
from cinefoley.worlds.vggsound.stream import StreamClip, StreamDistillConfig, VGGSoundDistillSet
from cinefoley.worlds.vggsound.testsets import build_vggsound_testsets
from diff_foley_files import small_cavp
from synthetic_vggsound import FRAMES_4FPS, GARBAGE, clip_ids, write_vggsound


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("vgg")
    manifest = write_vggsound(root)
    report = write_frame_store(manifest, root / "store", workers=2, clips_per_shard=3, progress=False)
    return manifest, root / "store", report


def test_store_lists_clips_sizes_and_unreadable_videos(made):
    manifest, store, report = made
    summary = json.loads((store / "store.json").read_text())
    assert summary["clips"] == len(clip_ids()) and summary["shards"] == 3  # 7 rows, 3 per shard
    assert summary["frames"] == FRAMES_4FPS * len(clip_ids())
    assert summary["bytes_per_clip"] == pytest.approx(summary["bytes"] / summary["clips"])
    assert summary["vggsound_extrapolated_bytes"] == pytest.approx(summary["bytes_per_clip"] * 199_000)
    unreadable = pd.read_csv(store / "unreadable.csv")
    assert list(unreadable["clip_id"]) == [f"{GARBAGE[0]}_{GARBAGE[1]:06d}"]
    assert "unreadable" in str(report)


def test_shards_are_plain_webdataset_samples_with_the_manifest_metadata(made):
    import webdataset as wds

    _, store, _ = made
    samples = list(wds.WebDataset(str(store / shard_name(0)), shardshuffle=False))
    rows = pd.read_csv(made[0], dtype=str, keep_default_na=False).head(3)
    assert [s["__key__"] for s in samples] == list(rows["clip_id"])
    meta = json.loads(samples[1]["json"])
    assert (meta["label"], meta["split"], meta["n_frames"]) == (rows["label"][1], rows["split"][1], FRAMES_4FPS)
    assert (meta["height"], meta["width"]) == (64, 48)  # port_rait: the video's own size, not 224
    assert sorted(k for k in samples[1] if k.endswith(".jpg")) == [f"{t:03d}.jpg" for t in range(FRAMES_4FPS)]


def test_store_frames_match_the_mp4_to_the_jpeg_tolerance(made):
    manifest, store_dir, _ = made
    store = FrameStore(store_dir)
    for cid in clip_ids():
        video = manifest.parent / "videos" / f"{cid}.mp4"
        want = load_video(video, n_frames=FRAMES_4FPS)
        got = store.load(cid, video, n_frames=FRAMES_4FPS)
        assert got.dtype == torch.uint8 and got.shape == want.shape
        diff = (got.int() - want.int()).abs().float()
        assert diff.max() <= JPEG_TOLERANCE["native_max"] and diff.mean() <= JPEG_TOLERANCE["native_mean"], cid
        diff = (squash_resize(got).int() - squash_resize(want).int()).abs().float()
        assert diff.max() <= JPEG_TOLERANCE["cavp_input_max"] and diff.mean() <= JPEG_TOLERANCE["cavp_input_mean"]
        assert diff.mean() > 0  # lossy: a store that fell back to the mp4 would not show
        assert torch.equal(store.load(cid, video, n_frames=4), got[:4])


def test_store_refuses_what_it_cannot_give(made):
    manifest, store_dir, _ = made
    store = FrameStore(store_dir)
    cid = clip_ids()[0]
    with pytest.raises(MediaError, match="has 10 4-fps frames in the store, 11 were asked"):
        store.load(cid, manifest.parent / "videos" / f"{cid}.mp4", n_frames=11)
    garbage = f"{GARBAGE[0]}_{GARBAGE[1]:06d}"
    with pytest.raises(MediaError) as e:
        store.load(garbage, manifest.parent / "videos" / "does-not-matter.mp4", n_frames=4)
    assert "does-not-matter.mp4" in str(e.value)  # the reason found when the store was made


def test_rerun_skips_finished_shards_and_rewrites_an_unfinished_one(made, tmp_path):
    manifest, store_dir, _ = made
    store = tmp_path / "store"
    shutil.copytree(store_dir, store)
    kept = (store / shard_name(0)).stat().st_mtime_ns
    (store / shard_name(2, "json")).unlink()  # shard 2's index never written: a killed run
    report = write_frame_store(manifest, store, workers=1, clips_per_shard=3, progress=False)
    assert report.summary["shards_written_now"] == 1 and report.summary["clips"] == len(clip_ids())
    assert (store / shard_name(0)).stat().st_mtime_ns == kept
    assert not list(store.glob(".*partial"))
    with pytest.raises(ValueError, match="another manifest"):
        write_frame_store(manifest, store, workers=1, clips_per_shard=2, progress=False)


@pytest.fixture(scope="module")
def videos_gone(made, tmp_path_factory):
    """A copy of the folder whose mp4s are all truncated: what still works reads the store."""
    manifest, store, _ = made
    root = tmp_path_factory.mktemp("gone")
    shutil.copytree(manifest.parent, root, dirs_exist_ok=True)
    build_vggsound_testsets(manifest, manifest.parent / "testsets")  # headers read while the videos exist
    shutil.copytree(manifest.parent / "testsets", root / "testsets", dirs_exist_ok=True)
    shutil.copy(manifest, root / "manifest.csv")
    for video in (root / "videos").glob("*.mp4"):
        video.write_bytes(video.read_bytes()[:500])
    return manifest.parent, root, store


def test_feature_extraction_and_cu_cm_test_sets_read_the_store(videos_gone, tmp_path):
    intact, gone, store = videos_gone
    encoder = small_cavp(seed=3)
    sets = ["cu", "cm"]
    from_mp4 = extract_features(intact / "manifest.csv", encoder, tmp_path / "mp4", workers=1, progress=False,
                                variation_manifests=[intact / "testsets" / f"test_{k}.csv" for k in sets])
    assert extract_features(gone / "manifest.csv", encoder, tmp_path / "broken", workers=1,
                            progress=False).written == 0  # the mp4s really are unreadable
    report = extract_features(gone / "manifest.csv", encoder, tmp_path / "store", workers=1, progress=False,
                              variation_manifests=[gone / "testsets" / f"test_{k}.csv" for k in sets], frames=store)
    assert report.written == from_mp4.written > len(clip_ids())
    assert [f["clip_id"] for f in report.failed] == [f"{GARBAGE[0]}_{GARBAGE[1]:06d}"]
    for path in (tmp_path / "mp4").rglob("*.npz"):
        want, got = np.load(path)["feat"], np.load(tmp_path / "store" / path.relative_to(tmp_path / "mp4"))["feat"]
        # the JPEG error moves these features by ~1e-4; frames in the wrong order move them by ~2e-3
        assert got.shape == want.shape and np.abs(got - want).max() < 5e-4, path
    assert json.loads((tmp_path / "store" / "features_run.json").read_text())["config"]["frames"] == str(store)


def test_distillation_pairs_read_the_store(videos_gone, tmp_path):
    intact, gone, store = videos_gone
    cfg = StreamDistillConfig(k=1.0, variation="cu&cm", n_frames=6, size=32, num_workers=0, seed=1)
    ids = clip_ids("train")
    for cid in ids:  # c_t is not what is compared here
        atomic_savez(tmp_path / f"{cid}.npz", feat=np.zeros((FRAMES_4FPS, 4), np.float32))
    from_mp4 = VGGSoundDistillSet([StreamClip(c, intact / "videos" / f"{c}.mp4", 0.0, tmp_path / f"{c}.npz")
                                   for c in ids], cfg)
    from_store = VGGSoundDistillSet([StreamClip(c, gone / "videos" / f"{c}.mp4", 0.0, tmp_path / f"{c}.npz")
                                     for c in ids], replace(cfg, frames=str(store)))
    for i in range(len(ids)):
        want, got = from_mp4[(0, i)], from_store[(0, i)]
        assert "error" not in got and got["kind"] == want["kind"] != ""
        diff = (got["video"].int() - want["video"].int()).abs().float()
        assert diff.max() <= JPEG_TOLERANCE["cavp_input_max"] and diff.mean() <= JPEG_TOLERANCE["cavp_input_mean"]


def test_cli_writes_the_store(made, tmp_path, capsys):
    manifest, _, _ = made
    assert cli_main(["vggsound", "frames", "--manifest", str(manifest), "--out", str(tmp_path / "s"),
                     "--workers", "1", "--clips-per-shard", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{len(clip_ids())} clips in 2 shards" in out and "MB per clip" in out


def test_the_world_makes_its_store_remembers_it_and_reads_the_test_sets_from_it(tmp_path):
    from cinefoley.worlds import open_world

    root = tmp_path / "data"
    write_vggsound(root)
    world = open_world("vggsound", tmp_path / "run", profile="smoke", vggsound_csv=root / "vggsound.csv",
                       video_dir=root / "videos", frames_dir=tmp_path / "store")
    assert world.build(progress=False)["frame_store"]["clips"] == len(clip_ids())
    ids = clip_ids("test")
    want = world.encoder_input("cu", ids)
    for video in (root / "videos").glob("*.mp4"):
        video.write_bytes(video.read_bytes()[:500])
    reopened = open_world("vggsound", tmp_path / "run", profile="smoke")  # the store is in world.json
    assert reopened.frames_dir == (tmp_path / "store").resolve()
    got = reopened.encoder_input("cu", ids)
    diff = (got.int() - want.int()).abs().float()
    assert diff.max() <= JPEG_TOLERANCE["cavp_input_max"] and diff.mean() <= JPEG_TOLERANCE["cavp_input_mean"]


def test_pairs_decoded_on_the_training_device_are_the_pairs_decoded_by_the_workers(videos_gone, tmp_path):
    from cinefoley.worlds.vggsound.stream import StreamedPairs

    _, gone, store = videos_gone
    ids = clip_ids("train")
    for cid in ids:
        atomic_savez(tmp_path / f"{cid}.npz", feat=np.zeros((FRAMES_4FPS, 4), np.float32))
    clips = [StreamClip(c, gone / "videos" / f"{c}.mp4", 0.0, tmp_path / f"{c}.npz") for c in ids]
    cfg = StreamDistillConfig(k=0.75, variation="cu&cm", n_frames=6, size=32, num_workers=0, seed=1, frames=str(store),
                              decode_on_device=False)
    on_device = replace(cfg, decode_on_device=True)  # the CUDA path, on the CPU: nvJPEG is libjpeg here
    assert VGGSoundDistillSet(clips, on_device)[(0, 0)]["video"][0][:2] == b"\xff\xd8"  # JPEGs leave the worker
    batches = [[0, 1, 2], [3]]
    in_workers = list(StreamedPairs(clips, cfg).batches(cfg, 0, batches))
    on_dev = list(StreamedPairs(clips, on_device).batches(on_device, 0, batches))
    assert [len(b) for b in on_dev] == [3, 1]
    for a, b in zip(in_workers, on_dev):
        assert torch.equal(a.x, b.x) and torch.equal(a.c_t, b.c_t)


def test_a_clip_id_that_is_no_webdataset_key_is_refused(tmp_path):
    (tmp_path / "m.csv").write_text("clip_id,video_path\nclip.v2,clip.mp4\n")
    with pytest.raises(ValueError, match="'clip.v2' contains '.'"):
        write_frame_store(tmp_path / "m.csv", tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
