"""``cinefoley foley``: sound for people's own videos, on real encoded files of every kind they bring."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from own_media import broken_copy, decoded_frames, write_clip

from cinefoley.cli import main
from cinefoley.foley import JOIN_FRAMES, FoleySettings, foley, join_windows, load_models, window_starts
from cinefoley.media.audio import load_audio, mel_spectrogram
from cinefoley.media.vocoder import GriffinLimVocoder
from cinefoley.study import create_study, read_pairs
from cinefoley.worlds.cinetoy.world import SHIPPED

STEPS = "2"  # the shipped generator at 2 DPM-Solver++ steps: real outputs in seconds


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of the videos people bring, a broken one in the middle (sorted order), a text file beside them."""
    d = tmp_path_factory.mktemp("my clips")
    write_clip(d / "a_12fps.mp4", fps=12, seconds=3.0)
    write_clip(d / "b_vfr_portrait_é.mp4", fps=20, seconds=5.0, vfr=True, size=(96, 48))
    broken_copy(d / "a_12fps.mp4", d / "c_broken.mp4")
    write_clip(d / "d_short_silent.mp4", fps=25, seconds=1.0, audio=False)  # shorter than the 2.048-s window
    write_clip(d / "e_odd_7fps.mp4", fps=7, seconds=3.0, size=(47, 63), codec="mpeg4")
    write_clip(d / "f_gray_60fps.mkv", fps=60, seconds=2.5, gray=True, pix_fmt="gray")
    (d / "notes.txt").write_text("not a video")
    return d


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A CineToy student checkpoint where notebook 03 leaves one: the teacher's weights, nudged."""
    teacher = torch.load(SHIPPED / "teacher.pt", weights_only=True)["state_dict"]
    g = torch.Generator().manual_seed(0)
    state = {k: v.float() + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in teacher.items()}
    run = tmp_path_factory.mktemp("distill") / "cu@75"
    run.mkdir()
    torch.save(state, run / "student_state.pt")
    return run


@pytest.fixture(scope="module")
def batch(clips, student, tmp_path_factory):
    """``cinefoley foley`` on the folder, whole videos, baseline and student: (out, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("foley")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["foley", str(clips), "--out", str(out), "--full", "--steps", STEPS, "--compare", str(student)])
    return out, code, stdout.getvalue(), stderr.getvalue()


GOOD = ("a_12fps", "b_vfr_portrait_é", "d_short_silent", "e_odd_7fps", "f_gray_60fps")


def test_a_batch_makes_every_good_video_and_names_the_broken_one(batch, clips):
    out, code, printed_out, printed_err = batch
    assert code == 1  # one input failed
    record = json.loads((out / "foley.json").read_text())
    assert [e["name"] for e in record["results"]["done"]] == list(GOOD)
    (failed,) = record["results"]["failed"]
    assert failed["input"].endswith("c_broken.mp4") and "no decodable video stream" in failed["reason"]
    assert "c_broken.mp4" in printed_err and "no decodable video stream" in printed_err
    assert "know only CineToy's 10 sounds" in printed_out and "know only" in record["config"]["note"]
    assert record["config"]["settings"]["full"] and record["config"]["systems"] == ["baseline", "cu@75"]
    assert {"torch", "cinefoley"} <= set(record["versions"])
    for system in ("baseline", "cu@75"):
        assert sorted(p.name for p in (out / system).glob("*.mp4")) == sorted(f"{n}.mp4" for n in GOOD)


@pytest.mark.parametrize("name", GOOD)
def test_outputs_keep_the_original_pictures_under_the_new_sound(batch, clips, name):
    out, *_ = batch
    (source,) = [p for p in clips.iterdir() if p.stem == name]
    want, want_t, want_hw = decoded_frames(source)
    entry = next(e for e in json.loads((out / "foley.json").read_text())["results"]["done"] if e["name"] == name)
    assert entry["pictures"] == "copied"  # --full: the whole video, its stream copied
    duration = entry["video_seconds"]
    for system in ("baseline", "cu@75"):
        mp4 = out / system / f"{name}.mp4"
        got, got_t, got_hw = decoded_frames(mp4)
        assert got == want and got_hw == want_hw  # every frame, in order, at its own size
        np.testing.assert_allclose(got_t, want_t, atol=1e-3)  # its own (variable) frame rate
        wav, sr = sf.read(out / system / f"{name}.wav", dtype="float32")
        # CineToy's G, shown objects it never saw, is quiet (RMS down to 2e-4 measured): sound, not silence
        assert sr == 16000 and np.sqrt(np.mean(wav ** 2)) > 3e-5
        # the sound lasts as long as the pictures (minus a vocoder hop)
        assert duration - 0.25 - 0.02 < len(wav) / sr <= duration
        track = load_audio(mp4)
        assert abs(len(track) - len(wav)) < 1100  # AAC: whole frames of 1024 samples, priming dropped
        gain = next(o["mp4_gain"] for o in entry["outputs"][system])
        assert gain == round(min(1.0, 0.99 / np.abs(wav).max()), 4)  # the mp4's sound never clips
        n = min(len(track), len(wav))
        assert np.abs(track).max() < 1.0 and np.corrcoef(track[:n], wav[:n])[0, 1] > 0.95
        # one vocoding of the whole joined mel, not windows vocoded apart and butted together (seams click)
        with np.load(out / system / f"{name}.mel.npz") as z:
            mel = z["mel"].astype(np.float32)
        assert len(wav) == (mel.shape[1] - 1) * 256
        # (0.989 at the quietest: the stored mel is float16)
        assert np.corrcoef(wav, GriffinLimVocoder()(mel[None])[0].numpy())[0, 1] > 0.98
    base, ours = (sf.read(out / s / f"{name}.wav")[0] for s in ("baseline", "cu@75"))
    assert not np.allclose(base, ours)  # the same noise, other features


def test_a_clip_shorter_than_the_window_gets_a_sound_as_long_as_itself(batch):
    out, *_ = batch
    entry = next(e for e in json.loads((out / "foley.json").read_text())["results"]["done"]
                 if e["name"] == "d_short_silent")
    assert entry["padded_to_window"] and entry["windows"] == [0] and entry["frames"] == 4
    assert 1.0 - 0.025 <= entry["sound_seconds"] <= 1.0  # a vocoder hop and the mel frame's rounding short
    with np.load(out / "baseline" / "d_short_silent.mel.npz") as z:
        assert z["mel"].shape == (128, 62)  # 1.0 s of 16-ms mel frames


def test_the_pairs_csv_goes_straight_into_a_study(batch, tmp_path):
    out, *_ = batch
    pairs = read_pairs(out / "pairs.csv")
    assert [p.clip_id for p in pairs] == list(GOOD)
    assert all(p.baseline.parent.name == "baseline" and p.ours.parent.name == "cu@75" for p in pairs)
    study = create_study(out / "pairs.csv", tmp_path / "study", n_catch=2)
    assert len(study.clips) == len(GOOD) and len(study.catch) == 2


def test_a_rerun_keeps_finished_work_and_redoes_what_changed(batch, clips, student, capsys):
    out, *_ = batch
    mp4 = out / "baseline" / "a_12fps.mp4"
    before = mp4.stat().st_mtime_ns
    code = main(["foley", str(clips), "--out", str(out), "--full", "--steps", STEPS, "--compare", str(student)])
    printed = capsys.readouterr()
    assert code == 1 and printed.out.count("kept from the previous run") == len(GOOD)
    assert mp4.stat().st_mtime_ns == before
    record = json.loads((out / "foley.json").read_text())
    assert len(record["results"]["done"]) == len(GOOD) and len(record["results"]["failed"]) == 1


def test_one_window_from_start_re_encodes_that_span_of_the_pictures(clips, tmp_path):
    source = clips / "b_vfr_portrait_é.mp4"
    teacher, generator, _ = load_models()
    run = foley([source], tmp_path, generator=generator, encoders={"baseline": teacher},
                settings=FoleySettings(steps=2, start=1.36, samples=2, seed=5))
    (entry,) = run.done
    assert run.ok and entry["pictures"] == "re-encoded" and entry["windows"] == [0]
    assert entry["sound_seconds"] == pytest.approx(2.048 - 0.016, abs=1e-3)  # one window, less a vocoder hop
    want, want_t, _ = decoded_frames(source)
    got, got_t, hw = decoded_frames(tmp_path / "baseline" / "b_vfr_portrait_é-s1.mp4")
    first = int(np.searchsorted(want_t, 1.36 + 1e-3)) - 1  # the frame on screen at 1.36 s (from 1.325 s) starts it
    keep = [i for i in range(first, len(want)) if want_t[i] < 1.36 + 2.048 - 1e-3]
    assert got == [want[i] for i in keep] and hw == (96, 48)
    np.testing.assert_allclose(got_t, np.maximum(want_t[keep] - 1.36, 0), atol=1e-3)  # variable timing kept
    s0, s1 = (sf.read(tmp_path / "baseline" / f"b_vfr_portrait_é-s{k}.wav")[0] for k in (0, 1))
    assert not np.allclose(s0, s1)  # two samples, two seeds


@pytest.mark.parametrize("seconds, start, reason", [(0.2, 0.0, "less than one 4-fps frame"),
                                                    (3.0, 5.0, "less than one 4-fps frame")])
def test_unusable_videos_are_named_with_their_reason(tmp_path, seconds, start, reason):
    clip = write_clip(tmp_path / "tiny clip.mp4", fps=25, seconds=seconds)
    teacher, generator, _ = load_models()
    run = foley([clip, tmp_path / "missing.mp4"], tmp_path / "out", generator=generator,
                encoders={"baseline": teacher}, settings=FoleySettings(steps=1, start=start))
    assert not run.done and len(run.failed) == 2
    assert run.failed[0] == {"input": str(tmp_path / "missing.mp4"), "reason": "file not found"}
    assert str(clip) in run.failed[1]["reason"] and reason in run.failed[1]["reason"]


def test_two_videos_with_one_stem_get_two_names(tmp_path):
    for sub in ("day1", "day2"):
        (tmp_path / sub).mkdir()
        write_clip(tmp_path / sub / "take.mp4", fps=10, seconds=2.2, first=40 if sub == "day2" else 0)
    teacher, generator, _ = load_models()
    run = foley([tmp_path / "day1", tmp_path / "day2"], tmp_path / "out", generator=generator,
                encoders={"baseline": teacher}, settings=FoleySettings(steps=1))
    assert [e["name"] for e in run.done] == ["take", "take-2"]
    assert decoded_frames(tmp_path / "out" / "baseline" / "take-2.mp4")[0][0] == 40


def test_outputs_inside_the_input_folder_are_not_taken_for_inputs(tmp_path):
    write_clip(tmp_path / "take.mp4", fps=10, seconds=2.2)
    teacher, generator, _ = load_models()
    for _ in range(2):
        run = foley([tmp_path], tmp_path / "foley", generator=generator, encoders={"baseline": teacher},
                    settings=FoleySettings(steps=1))
        assert [e["name"] for e in run.done] == ["take"] and run.ok


def test_a_student_that_does_not_fit_is_refused_naming_its_file(clips, tmp_path, capsys):
    bad = tmp_path / "student_state.pt"
    torch.save({"layer1.0.weight": torch.zeros(3)}, bad)
    code = main(["foley", str(clips / "a_12fps.mp4"), "--out", str(tmp_path / "out"), "--compare", str(bad)])
    assert code == 2 and str(bad) in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# windows

def test_windows_cover_the_clip_and_overlap_to_be_joined():
    assert window_starts(5, 8, full=True) == [0]
    assert window_starts(20, 8, full=False) == [0]
    assert window_starts(8, 8, full=True) == [0]
    assert window_starts(14, 8, full=True) == [0, 6]
    assert window_starts(15, 8, full=True) == [0, 6, 7]  # the last window ends with the clip
    for n in range(8, 60):
        starts = window_starts(n, 8, full=True)
        assert starts[-1] + 8 == n and all(0 < b - a <= 8 - JOIN_FRAMES for a, b in zip(starts, starts[1:]))


def test_joined_windows_start_with_their_pictures_and_cross_fade():
    mels = torch.stack([torch.full((128, 128), v) for v in (0.2, 0.6, 0.9)])
    joined = join_windows(mels, [0, 6, 10], seconds=4.5)
    assert joined.shape == (128, round(4.5 * 16000 / 256))
    row = joined[0].numpy()
    # window 2 starts at 1.5 s = mel frame 93.75 -> 94, window 1 ends at 2.048 s = frame 128: fade in 96-128
    assert np.allclose(row[:96], 0.2) and np.allclose(row[128:156], 0.6)
    assert np.all(np.diff(row[95:129]) > 0) and 0.2 < row[112] < 0.6
    # window 3 starts at 2.5 s (frame 156); window 2 ends at frame 222 (1.5 s + 2.048 s): fade in 190-222
    assert np.allclose(row[156:190], 0.6) and np.allclose(row[222:], 0.9) and np.all(np.diff(row[189:223]) > 0)


def _seam_energy(wav: np.ndarray) -> float:
    """Largest energy above 7.65 kHz in a 16-ms frame, over its median: a click is broadband."""
    frames = wav[: len(wav) // 256 * 256].reshape(-1, 256) * np.hanning(256)
    high = (np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, 123:].sum(axis=1)
    return float(high.max() / np.median(high))


def test_joined_windows_have_no_click_where_concatenated_ones_do():
    t = np.arange(32769) / 16000
    tones = [mel_spectrogram(0.3 * np.sin(2 * np.pi * hz * t) + 0.1 * np.sin(4 * np.pi * hz * t))[:, :128]
             for hz in (300, 700)]
    mels = torch.from_numpy(np.stack(tones)).float()
    vocoder = GriffinLimVocoder()
    ours = vocoder(join_windows(mels, [0, 6], seconds=3.5)[None])[0].numpy()
    naive = np.concatenate([vocoder(mels[:1])[0].numpy()[:24000], vocoder(mels[1:])[0].numpy()])
    assert _seam_energy(naive) > 1000 and _seam_energy(ours) < 10


def test_foley_json_is_rewritten_as_batches_finish(clips, tmp_path):
    teacher, generator, _ = load_models()
    seen = []

    def log(line):
        if (tmp_path / "foley.json").exists():
            seen.append(len(json.loads((tmp_path / "foley.json").read_text())["results"]["done"]))

    foley([clips / "a_12fps.mp4", clips / "e_odd_7fps.mp4"], tmp_path, generator=generator,
          encoders={"baseline": teacher}, settings=FoleySettings(steps=1, batch_size=1), log=log)
    assert seen == [1]  # when the second video is done, the record already holds the first
    assert os.listdir(tmp_path / "baseline") and not list(tmp_path.rglob(".*partial*"))


def test_the_real_tier_runs_from_diff_foleys_files(tmp_path, capsys):
    from diff_foley_files import REAL_TIER_OPTIONS, small_cavp, write_real_tier_checkpoints

    ckpt = write_real_tier_checkpoints(tmp_path / "ckpt")
    run = tmp_path / "distill" / "cu@75"
    run.mkdir(parents=True)
    torch.save(small_cavp(seed=1).state_dict(), run / "student_state.pt")  # what streamed distillation writes
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "long.mp4", fps=10, seconds=9.0, size=(40, 56))
    write_clip(clips / "short.mp4", fps=24, seconds=3.0, size=(56, 40), audio=False)
    out = tmp_path / "out"
    options = json.dumps({k: REAL_TIER_OPTIONS[k] for k in ("cavp", "ldm")})
    code = main(["foley", str(clips), "--out", str(out), "--cavp", str(ckpt["cavp"]), "--ldm", str(ckpt["ldm"]),
                 "--model-options", options, "--compare", str(run), "--full", "--steps", "2"])
    assert code == 0 and "Diff-Foley's encoder" in capsys.readouterr().out
    record = json.loads((out / "foley.json").read_text())
    assert record["config"]["window_frames"] == 32 and record["config"]["models"]["cu@75"].startswith("CAVP")
    long, short = record["results"]["done"]
    assert long["windows"] == [0, 4] and not long["padded_to_window"] and long["pictures"] == "copied"
    assert short["windows"] == [0] and short["padded_to_window"]  # 12 frames of a 32-frame window
    for entry, seconds in ((long, 9.0), (short, 3.0)):
        for system in ("baseline", "cu@75"):
            wav, _ = sf.read(out / system / f"{entry['name']}.wav")
            assert seconds - 0.03 <= len(wav) / 16000 <= seconds
    assert [p.clip_id for p in read_pairs(out / "pairs.csv")] == ["long", "short"]


def test_pictures_in_a_codec_mp4_cannot_hold_are_re_encoded_whole(tmp_path):
    from own_media import coded_frame

    from cinefoley.media.mux import mux_sound

    source = tmp_path / "raw.avi"
    with av.open(str(source), "w") as out:
        stream = out.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 63, 47, "yuv420p"
        for k in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(coded_frame(k, 47, 63), format="rgb24")
                                  .reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    assert mux_sound(source, tmp_path / "raw.mp4", np.zeros(32000, np.float32)) == "re-encoded"
    got, got_t, hw = decoded_frames(tmp_path / "raw.mp4")
    assert got == list(range(20)) and hw == (47, 63) and np.allclose(got_t, np.arange(20) / 10, atol=1e-3)
