"""CineToy: determinism, classes, events seen and heard together, ground truth, robust building."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from cinefoley.worlds.cinetoy import render as toyworld
from cinefoley.worlds.cinetoy.render import (CLASSES, SAMPLE_RATE, WorldConfig, build_world, loader_frame_times,
                                     object_box, plan_clip, render_frame)
from cinefoley.media.video import load_video


@pytest.fixture(scope="module")
def manifest(tiny_world):
    return pd.read_csv(tiny_world / "manifest.csv")


def _flash(events, t, tau=0.18):
    return sum(math.exp(-(t - e) / tau) for e in events if t >= e)


def test_manifest_lists_every_clip_with_its_ground_truth(tiny_world, manifest, tiny_world_config):
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 6}
    assert manifest["clip_id"].is_unique
    for _, row in manifest.iterrows():
        assert (tiny_world / row["video_path"]).stat().st_size > 0
        info = sf.info(tiny_world / row["audio_path"])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert info.frames == round(tiny_world_config.duration * SAMPLE_RATE)
        assert CLASSES[row["class_id"]].name == row["label"]
    report = json.loads((tiny_world / "build_report.json").read_text())
    assert report["clips"] == 16 and report["rendered"] == 16 and report["failed"] == []


def test_world_is_deterministic_from_the_seed(tmp_path, tiny_world, tiny_world_config):
    build_world(tmp_path, tiny_world_config, progress=False)
    assert (tmp_path / "manifest.csv").read_bytes() == (tiny_world / "manifest.csv").read_bytes()
    wavs = sorted(p.relative_to(tiny_world) for p in tiny_world.rglob("*.wav"))
    assert len(wavs) == 16
    for rel in wavs:
        assert (tmp_path / rel).read_bytes() == (tiny_world / rel).read_bytes()
    for rel in sorted(p.relative_to(tiny_world) for p in tiny_world.rglob("*.mp4"))[:3]:
        assert np.array_equal(load_video(tmp_path / rel), load_video(tiny_world / rel))


def test_another_seed_gives_another_world(tmp_path, manifest):
    other = build_world(tmp_path, WorldConfig(n_train=3, n_val=0, n_test=0, seed=1), progress=False)
    ours = manifest[manifest["split"] == "train"].head(3).reset_index(drop=True)
    assert list(other["clip_id"]) == list(ours["clip_id"])
    for col in ("event_times", "boxes"):
        assert all(a != b for a, b in zip(other[col], ours[col]))


def test_classes_have_unique_visual_and_sound_identities():
    assert len(CLASSES) >= 8
    assert len({(c.shape, c.colour) for c in CLASSES}) == len(CLASSES)
    assert len({c.texture for c in CLASSES}) == len(CLASSES)
    assert len({c.sound for c in CLASSES}) == len(CLASSES)
    # the design: every shape and every colour is shared, so only texture alone names the class
    assert all(sum(c.shape == d.shape for d in CLASSES) >= 2 for c in CLASSES)
    assert all(sum(c.colour == d.colour for d in CLASSES) >= 2 for c in CLASSES)


def test_event_times_lie_inside_the_clip_and_apart():
    cfg = WorldConfig()
    n_events = []
    for i in range(300):
        events = plan_clip(cfg, "train", i).events
        n_events.append(len(events))
        assert events == sorted(events) and len(events) >= 1
        assert all(0 < e < cfg.duration - 0.25 for e in events)
        assert np.all(np.diff(events) >= 0.35 - 1e-4)
    assert max(n_events) >= 3  # several events per clip occur
    long_cfg = WorldConfig(duration=8.2)
    assert max(len(plan_clip(long_cfg, "test", i).events) for i in range(30)) >= 8


def test_plans_use_every_class_and_several_distractors():
    cfg = WorldConfig()
    plans = [plan_clip(cfg, "train", i) for i in range(300)]
    assert {p.cls for p in plans} == set(range(len(CLASSES)))
    for p in plans:
        assert p.objects[0].sounding and p.objects[0].cls == p.cls
        distractors = p.objects[1:]
        assert 1 <= len(distractors) <= 2 and not any(o.sounding for o in distractors)
        assert p.cls not in {o.cls for o in distractors}


def test_the_sound_is_at_the_events(tiny_world, manifest):
    window = int(0.05 * SAMPLE_RATE)
    checked = 0
    for _, row in manifest.iterrows():
        wav, sr = sf.read(tiny_world / row["audio_path"], dtype="float32")
        events = json.loads(row["event_times"])

        def energy(s):
            i = int(s * sr)
            return float(np.mean(wav[i:i + window] ** 2))

        quiet = [energy(s) for s in np.arange(0, len(wav) / sr - 0.05, 0.05)
                 if not any(s - 0.55 <= e <= s + 0.05 for e in events)]  # no event sounding or starting
        if quiet:
            assert min(energy(e) for e in events) > 50 * np.median(quiet)
            checked += 1
        assert energy(events[0]) > 100 * energy(events[0] - 0.05)  # silence just before the first event
    assert checked >= 10


def test_the_sounding_object_flashes_at_the_events(tiny_world, manifest, tiny_world_config):
    gains = []
    for _, row in manifest.iterrows():
        video = load_video(tiny_world / row["video_path"]).float()
        events, boxes = json.loads(row["event_times"]), json.loads(row["boxes"])
        n = len(boxes)
        calm = int(np.argmin([_flash(events, k / 4) for k in range(n)]))
        assert _flash(events, calm / 4) < 0.05
        for e in events:
            k = math.ceil(e * 4)  # the first 4-fps frame at or after the event
            if k >= n:
                continue
            top, left, h, w = boxes[k]
            gains.append(float(video[k, :, top:top + h, left:left + w].mean() - video[calm, :, top:top + h, left:left + w].mean()))
    assert len(gains) >= 20
    assert min(gains) > 3 and np.median(gains) > 10  # uint8 levels


def test_boxes_cover_every_loaded_frame_inside_the_frame(manifest, tiny_world_config):
    size = tiny_world_config.size
    for _, row in manifest.iterrows():
        boxes = json.loads(row["boxes"])
        assert len(boxes) == row["n_frames"] == 8
        smallest = 2 * tiny_world_config.object_radius[0] * size - 1  # objects span about a third
        for top, left, h, w in boxes:
            assert top >= 0 and left >= 0 and top + h <= size and left + w <= size
            assert min(h, w) >= smallest


def test_loader_frame_times_are_the_rendered_frames_on_screen():
    cfg = WorldConfig(render_fps=10.0)
    assert np.allclose(loader_frame_times(cfg), [0.0, 0.2, 0.5, 0.7, 1.0, 1.2, 1.5, 1.7])
    assert np.allclose(loader_frame_times(WorldConfig()), np.arange(8) / 4)


def test_box_holds_the_sounding_object_and_distractors_never_flash():
    cfg = WorldConfig()
    size = cfg.size
    for i in range(40):
        plan = plan_clip(cfg, "test", i)
        bg = toyworld._background(plan, size)
        without_object = dataclasses.replace(plan, objects=plan.objects[1:])
        without_events = dataclasses.replace(plan, events=[])
        for t in loader_frame_times(cfg):
            t = float(t)
            top, left, h, w = object_box(plan.objects[0], t, size, plan.events)
            outside = np.ones((size, size), bool)
            outside[top:top + h, left:left + w] = False
            frame = render_frame(plan, t, size, bg)
            # the object is drawn only inside its box ...
            assert np.array_equal(frame[outside], render_frame(without_object, t, size, bg)[outside])
            # ... and the events change nothing outside it: distractors and background stay put
            assert np.array_equal(frame[outside], render_frame(without_events, t, size, bg)[outside])


def test_rebuilding_renders_nothing_and_another_config_is_refused(tmp_path, tiny_world, tiny_world_config):
    root = tmp_path / "world"
    shutil.copytree(tiny_world, root)
    again = build_world(root, tiny_world_config, progress=False)
    report = json.loads((root / "build_report.json").read_text())
    assert report["rendered"] == 0 and report["clips"] == 16
    assert again.to_csv(index=False) == (tiny_world / "manifest.csv").read_text()
    with pytest.raises(ValueError, match="different world"):
        build_world(root, dataclasses.replace(tiny_world_config, seed=5), progress=False)


def test_interrupted_build_resumes_with_the_missing_clips(tmp_path):
    cfg = WorldConfig(n_train=3, n_val=0, n_test=0)
    build_world(tmp_path, cfg, progress=False)
    (tmp_path / "train" / "cinetoy_train_00001.mp4").unlink()
    build_world(tmp_path, cfg, progress=False)
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["rendered"] == 1 and report["clips"] == 3


def test_a_failing_clip_is_reported_and_the_build_goes_on(tmp_path, monkeypatch):
    real = toyworld.render_clip

    def flaky(plan, cfg, root):
        if plan.clip_id == "cinetoy_train_00001":
            raise RuntimeError("disk on fire")
        return real(plan, cfg, root)

    monkeypatch.setattr(toyworld, "render_clip", flaky)
    manifest = build_world(tmp_path, WorldConfig(n_train=3, n_val=0, n_test=1), progress=False)
    assert list(manifest["clip_id"]) == ["cinetoy_train_00000", "cinetoy_train_00002", "cinetoy_test_00000"]
    report = json.loads((tmp_path / "build_report.json").read_text())
    assert report["failed"] == [{"clip_id": "cinetoy_train_00001", "error": "RuntimeError: disk on fire"}]
    assert report["clips"] == 3
    assert not (tmp_path / "train" / "cinetoy_train_00001.mp4").exists()


def test_world_at_real_tier_shape(tmp_path):
    cfg = WorldConfig(n_train=1, n_val=0, n_test=0, size=224, duration=8.2)
    manifest = build_world(tmp_path, cfg, progress=False)
    row = manifest.iloc[0]
    video = load_video(tmp_path / row["video_path"])
    assert video.shape == (32, 3, 224, 224)
    boxes = json.loads(row["boxes"])
    assert len(boxes) == row["n_frames"] == 32
    assert all(top + h <= 224 and left + w <= 224 for top, left, h, w in boxes)
    assert sf.info(tmp_path / row["audio_path"]).frames == round(8.2 * SAMPLE_RATE)
