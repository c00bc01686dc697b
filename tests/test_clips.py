"""Loading a split into tensors: shapes, skipping bad clips, and the npz cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from cinefoley.media import clips
from cinefoley.media.clips import load_split, read_manifest
from cinefoley.media.video import load_video


@pytest.fixture
def world_copy(tmp_path, tiny_world):
    """A private copy of the tiny world, free to damage."""
    root = tmp_path / "world"
    shutil.copytree(tiny_world, root)
    return root


@pytest.fixture
def count_loads(monkeypatch):
    calls = []
    real = clips.load_clip

    def counting(df, row, **kw):
        calls.append(row["clip_id"])
        return real(df, row, **kw)

    monkeypatch.setattr(clips, "load_clip", counting)
    return calls


def test_load_split_shapes_and_content(tiny_world):
    df = read_manifest(tiny_world / "manifest.csv")
    data = load_split(df, "train", progress=False)
    train = df[df["split"] == "train"]
    assert len(data) == 8 and data.clip_ids == list(train["clip_id"])
    assert data.videos.dtype == torch.uint8 and data.videos.shape == (8, 8, 3, 64, 64)
    assert data.mels.dtype == torch.float32 and data.mels.shape == (8, 128, 128)
    assert data.mels.min() >= 0 and data.mels.max() <= 1
    assert data.labels.tolist() == train["class_id"].tolist()
    assert list(data.rows["clip_id"]) == data.clip_ids and data.skipped == []
    first = train.iloc[0]
    assert torch.equal(data.videos[0], load_video(tiny_world / first["video_path"], n_frames=8, size=64))
    # the mel is the clip's sound: its loudest band is louder just after each event than just before
    loudest = data.mels[0].max(dim=0).values
    for e in json.loads(first["event_times"]):
        i = round(e * 16000 / 256)  # mel frame of the onset
        assert loudest[i + 1:i + 4].mean() > loudest[max(i - 4, 0):i - 1].mean() + 0.3


def test_size_and_length_follow_the_arguments(tiny_world):
    df = read_manifest(tiny_world / "manifest.csv")
    data = load_split(df, "val", n_frames=4, size=32, progress=False)
    assert data.videos.shape == (2, 4, 3, 32, 32) and data.mels.shape == (2, 128, 64)
    everything = load_split(df, None, n_frames=2, size=16, progress=False)
    assert len(everything) == 16


def test_sound_is_read_from_the_mp4_without_a_wav(world_copy):
    df = pd.read_csv(world_copy / "manifest.csv").drop(columns=["audio_path"])
    df.to_csv(world_copy / "video_only.csv", index=False)
    from_mp4 = load_split(read_manifest(world_copy / "video_only.csv"), "val", progress=False)
    from_wav = load_split(read_manifest(world_copy / "manifest.csv"), "val", progress=False)
    assert from_mp4.mels.shape == from_wav.mels.shape
    assert (from_mp4.mels - from_wav.mels).abs().mean() < 0.05  # AAC is lossy, the sound is the same


def test_a_corrupt_clip_is_skipped_and_reported(world_copy):
    df = read_manifest(world_copy / "manifest.csv")
    bad = df[df["split"] == "test"].iloc[2]
    mp4 = world_copy / bad["video_path"]
    data = mp4.read_bytes()
    mp4.write_bytes(data[: len(data) // 2])
    out = load_split(df, "test", cache_dir=world_copy / "cache", progress=False)
    assert len(out) == 5 and bad["clip_id"] not in out.clip_ids
    assert out.videos.shape[0] == out.mels.shape[0] == len(out.labels) == len(out.rows) == 5
    assert [s["clip_id"] for s in out.skipped] == [bad["clip_id"]]
    assert str(mp4) in out.skipped[0]["error"]
    reports = list((world_copy / "cache").glob("*.skipped.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())[0]["clip_id"] == bad["clip_id"]
    cached = load_split(df, "test", cache_dir=world_copy / "cache", progress=False)
    assert cached.clip_ids == out.clip_ids and cached.skipped == out.skipped
    assert list(cached.rows["clip_id"]) == out.clip_ids


def test_no_readable_clip_is_an_error(world_copy):
    df = read_manifest(world_copy / "manifest.csv")
    for rel in df.loc[df["split"] == "val", "video_path"]:
        (world_copy / rel).write_bytes(b"")
    with pytest.raises(ValueError, match="no readable clips"):
        load_split(df, "val", progress=False)


def test_the_cache_is_used_on_the_second_call(world_copy, count_loads):
    df = read_manifest(world_copy / "manifest.csv")
    cache = world_copy / "cache"
    first = load_split(df, "test", cache_dir=cache, progress=False)
    assert len(count_loads) == 6 and len(list(cache.glob("*.npz"))) == 1
    second = load_split(df, "test", cache_dir=cache, progress=False)
    assert len(count_loads) == 6  # nothing decoded again
    assert second.clip_ids == first.clip_ids
    assert torch.equal(second.videos, first.videos) and torch.equal(second.mels, first.mels)
    assert torch.equal(second.labels, first.labels)
    pd.testing.assert_frame_equal(second.rows, first.rows)
    load_split(df, "test", n_frames=4, cache_dir=cache, progress=False)  # other settings, other cache
    assert len(count_loads) == 12


@pytest.mark.parametrize("column", ["video_path", "audio_path"])
def test_the_cache_is_invalidated_when_a_file_changes(world_copy, count_loads, column):
    df = read_manifest(world_copy / "manifest.csv")
    cache = world_copy / "cache"
    load_split(df, "val", cache_dir=cache, progress=False)
    assert len(count_loads) == 2
    a, b = (world_copy / p for p in df.loc[df["split"] == "val", column])
    shutil.copyfile(b, a)  # clip a now holds clip b's file
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = load_split(df, "val", cache_dir=cache, progress=False)
    assert len(count_loads) == 4
    same = again.videos if column == "video_path" else again.mels
    assert torch.equal(same[0], same[1])


def test_read_manifest_checks_its_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")
    pd.DataFrame({"clip_id": ["a"], "label": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="video_path"):
        read_manifest(tmp_path / "m.csv")
    pd.DataFrame({"clip_id": ["007"], "video_path": ["v.mp4"]}).to_csv(tmp_path / "ids.csv", index=False)
    df = read_manifest(tmp_path / "ids.csv")
    assert df.loc[0, "clip_id"] == "007" and df.attrs["root"] == str(tmp_path.resolve())
    assert clips.resolve(df, "v.mp4") == tmp_path.resolve() / "v.mp4"
    assert clips.resolve(df, "/abs/v.mp4") == Path("/abs/v.mp4")
