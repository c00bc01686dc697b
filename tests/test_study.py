"""cinefoley.study: stimuli, design, vote store, widget, statistics, CLI and notebook 07 (smoke)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import psutil
import pytest
from scipy.stats import binom

from cinefoley.errors import MediaError
from cinefoley.study import (StudyApp, VoteStore, analyze, binomial_test, create_study, make_demo_pairs,
                             participant_links, preference_table, read_pairs, simulate_votes, wilson_interval)
from cinefoley.study.app import participant_app
from cinefoley.study.cli import main as cli_main
from cinefoley.study.cli import register
from cinefoley.study.design import BASELINE, CATCH, MATCH, MISMATCH, OURS, TEST, Study, Trial, participant_ids
from cinefoley.study.media import probe, transcode, write_mp4
from cinefoley.study.serve import VoilaServer, free_port

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {"baseline": "SYSBASE-Q7", "ours": "SYSOURS-K9"}


def tiny_mp4(path, seconds=1.0, hz=440.0, title=None, audio=True):
    """A 32x32, 4 fps H.264 (+ AAC tone) mp4; ``title`` is written as container metadata."""
    n = int(seconds * 4)
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = np.arange(n)[:, None, None, None] * 40
    t = np.arange(int(seconds * 16000)) / 16000
    if audio and title is None:
        return write_mp4(path, frames, 4, 0.3 * np.sin(2 * np.pi * hz * t))
    with av.open(str(path), "w", format="mp4") as out:
        if title:
            out.metadata["title"] = title
        v = out.add_stream("libx264", rate=4)
        v.width = v.height = 32
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        if a is not None:
            frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[None],
                                               format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return Path(path)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    return make_demo_pairs(tmp_path_factory.mktemp("pairs"), n_clips=5, seed=3, duration=1.0, size=32)


@pytest.fixture()
def study(pairs_csv, tmp_path):
    return create_study(pairs_csv, tmp_path / "study", seed=7, n_catch=2, baseline_name=SYSTEMS["baseline"],
                        ours_name=SYSTEMS["ours"])


def audio_of(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])


# --- stimuli ---------------------------------------------------------------------------------------------------

def test_write_mp4_gives_h264_and_aac(tmp_path):
    path = tiny_mp4(tmp_path / "a.mp4", seconds=1.0)
    info = probe(path)
    assert (info["width"], info["height"], info["fps"], info["sample_rate"]) == (32, 32, 4.0, 16000)
    assert abs(info["duration"] - 1.0) < 0.1
    with av.open(str(path)) as c:
        assert (c.streams.video[0].codec_context.name, c.streams.audio[0].codec_context.name) == ("h264", "aac")


def test_transcode_drops_metadata_and_takes_sound_from_another_file(tmp_path):
    src = tiny_mp4(tmp_path / "ours_secret.mp4", seconds=2.0, hz=440, title="made-by-SYSOURS")
    other = tiny_mp4(tmp_path / "other.mp4", seconds=1.0, hz=1500)
    out = transcode(src, tmp_path / "neutral.mp4", audio_src=other)
    data = out.read_bytes()
    assert b"SYSOURS" not in data and b"ours_secret" not in data
    spectrum = np.abs(np.fft.rfft(audio_of(out)))
    assert abs(np.argmax(spectrum) / len(spectrum) * 8000 - 1500) < 50  # the other file's tone
    own = transcode(src, tmp_path / "own.mp4")
    assert abs(probe(own)["duration"] - 2.0) < 0.1
    long_sound = transcode(other, tmp_path / "cut.mp4", audio_src=src)  # 2 s of sound under 1 s of pictures
    assert len(audio_of(long_sound)) < 1.2 * 16000


def test_bad_media_raise_errors_naming_the_file(tmp_path):
    silent = tiny_mp4(tmp_path / "silent.mp4", audio=False)
    with pytest.raises(MediaError, match="silent.mp4: has no audio stream"):
        transcode(silent, tmp_path / "x.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(MediaError, match="junk.mp4"):
        transcode(junk, tmp_path / "y.mp4")
    with pytest.raises(MediaError, match="missing.mp4: file not found"):
        probe(tmp_path / "missing.mp4")
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob(".*partial*"))


# --- design ----------------------------------------------------------------------------------------------------

def test_read_pairs_resolves_relative_paths_and_rejects_bad_rows(pairs_csv, tmp_path):
    pairs = read_pairs(pairs_csv)
    assert [p.clip_id for p in pairs] == [f"demo-{i:02d}" for i in range(5)]
    assert all(p.baseline.is_file() and p.ours.is_file() for p in pairs)
    bad = tmp_path / "bad.csv"
    bad.write_text("clip_id,baseline\nx,a.mp4\n")
    with pytest.raises(ValueError, match="bad.csv: missing column"):
        read_pairs(bad)
    rows = pairs_csv.read_text().splitlines()
    dup = pairs_csv.parent / "dup.csv"
    dup.write_text("\n".join([rows[0], rows[1], rows[1]]) + "\n")
    with pytest.raises(ValueError, match="dup.csv:3: clip_id 'demo-00' appears twice"):
        read_pairs(dup)
    gone = pairs_csv.parent / "gone.csv"
    gone.write_text(rows[0] + "\nz,nowhere.mp4,demo-00_ours.mp4\n")
    with pytest.raises(MediaError, match="nowhere.mp4: baseline file of clip 'z' not found"):
        read_pairs(gone)


def test_create_study_uses_neutral_names_and_refuses_to_mix_designs(study, pairs_csv):
    files = sorted(p.name for p in (study.folder / "media").iterdir())
    assert len(files) == 2 * 5 + 2  # both systems of every clip + one mismatched catch stimulus each
    assert all(len(Path(f).stem) == 16 and int(Path(f).stem, 16) >= 0 for f in files)
    assert all(BASELINE not in f and OURS not in f and "demo" not in f for f in files)
    again = Study.load(study.folder)
    assert again.plan("p01") == study.plan("p01") and again.systems == SYSTEMS
    assert create_study(pairs_csv, study.folder, seed=7, n_catch=2, baseline_name=SYSTEMS["baseline"],
                        ours_name=SYSTEMS["ours"], exist_ok=True).fingerprint == study.fingerprint
    with pytest.raises(FileExistsError, match="other pairs or settings"):
        create_study(pairs_csv, study.folder, seed=8, n_catch=2, exist_ok=True)
    with pytest.raises(FileExistsError):
        create_study(pairs_csv, study.folder, seed=7, n_catch=2)
    with pytest.raises(ValueError, match="n_catch"):
        create_study(pairs_csv, study.folder.parent / "other", n_catch=6)


def test_catch_stimuli_pair_a_clip_with_its_own_and_another_clips_sound(study):
    for row in study.catch:
        clip = next(c for c in study.clips if c["clip_id"] == row["clip_id"])
        donor = next(c for c in study.clips if c["clip_id"] == row["audio_from"])
        assert row["audio_from"] != row["clip_id"]
        assert row[MATCH] == clip[row["system"]]
        mismatch = audio_of(study.folder / row[MISMATCH])
        donor_audio = audio_of(study.folder / donor[row["system"]])
        n = min(len(mismatch), len(donor_audio))
        assert np.corrcoef(mismatch[:n], donor_audio[:n])[0, 1] > 0.9


def test_plans_are_reproducible_balanced_and_differ_between_participants(study):
    plans = {pid: study.plan(pid) for pid in participant_ids(20)}
    assert study.plan("p01") == plans["p01"]
    for plan in plans.values():
        tests = [t for t in plan if t.kind == TEST]
        assert sorted(t.item for t in tests) == [c["clip_id"] for c in study.clips]
        assert sorted(t.item for t in plan if t.kind == CATCH) == ["catch-1", "catch-2"]
        assert plan[0].kind == TEST and [t.index for t in plan] == list(range(study.n_trials))
        assert sum(t.a == BASELINE for t in tests) in (2, 3)  # sides balanced within a participant (5 clips)
        assert all({t.a, t.b} == ({BASELINE, OURS} if t.kind == TEST else {MATCH, MISMATCH}) for t in plan)
    assert len({tuple((t.item, t.a) for t in p) for p in plans.values()}) == 20
    with pytest.raises(ValueError, match="invalid participant id"):
        study.plan("p01?admin=1")


# --- vote store ------------------------------------------------------------------------------------------------

def test_store_is_wal_counts_each_trial_once_and_resumes(tmp_path):
    trials = [Trial(i, TEST, f"c{i}", BASELINE, OURS) for i in range(3)]
    with VoteStore(tmp_path / "v.sqlite") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.next_trial("p1", 3) == 0
        assert store.record("p1", trials[0], "B", 1.5)
        assert not store.record("p1", trials[0], "A")  # double click / second tab: first vote stands
        assert store.record("p1", trials[2], "A")
        assert store.next_trial("p1", 3) == 1 and store.next_trial("p2", 3) == 0
        with pytest.raises(ValueError, match="choice must be"):
            store.record("p1", trials[1], "C")
        votes = store.votes()
    assert [(v["trial"], v["choice"], v["chosen"]) for v in votes] == [(0, "B", OURS), (2, "A", BASELINE)]


def _writer(path, participant, n):
    """A separate process that commits ``n`` votes and prints each trial index once it is committed."""
    code = ("from cinefoley.study.store import VoteStore\nfrom cinefoley.study.design import Trial\n"
            f"s = VoteStore({str(path)!r})\n"
            f"for i in range({n}):\n"
            f"    s.record({participant!r}, Trial(i, 'test', 'c', 'baseline', 'ours'), 'AB'[i % 2])\n"
            "    print(i, flush=True)\n")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_store_takes_votes_from_many_processes_at_once(tmp_path):
    path = tmp_path / "v.sqlite"
    VoteStore(path).close()
    procs = [_writer(path, f"p{k}", 40) for k in range(4)]
    assert [p.wait(60) for p in procs] == [0] * 4
    with VoteStore(path) as store:
        votes = store.votes()
    assert len(votes) == 160 and len({(v["participant"], v["trial"]) for v in votes}) == 160


def test_killed_writer_loses_no_acknowledged_vote(tmp_path):
    path = tmp_path / "v.sqlite"
    VoteStore(path).close()
    proc = _writer(path, "p1", 100000)
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= 30:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(10)
    with VoteStore(path) as store:
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = store.answered("p1")
    assert set(range(acked + 1)) <= done


# --- widget ----------------------------------------------------------------------------------------------------

def _widget_states(widget):
    """Synced state of a widget and all its descendants, as the page receives it."""
    seen, stack, states = set(), [widget], []
    while stack:
        w = stack.pop()
        if w.model_id in seen:
            continue
        seen.add(w.model_id)
        state = w.get_state()
        states.append(state)
        stack += [v for v in state.values() if hasattr(v, "get_state")]
        stack += [x for v in state.values() if isinstance(v, (list, tuple)) for x in v if hasattr(x, "get_state")]
        stack += [getattr(w, name) for name in ("layout", "style") if hasattr(getattr(w, name, None), "get_state")]
    return states


def test_widget_needs_both_clips_played_then_records_before_moving_on(study):
    app = StudyApp(study, "p01")
    first = app.current_trial
    assert all(b.disabled for b in app.buttons)
    assert app.players[0].value == study.media_path(first, "a").read_bytes()
    app.players[0].heard = True
    assert all(b.disabled for b in app.buttons) and not app.vote("A")
    app.players[1].heard = True
    assert not any(b.disabled for b in app.buttons)
    assert app.vote("B")
    assert app.current_trial.index == 1 and not app.players[0].heard and all(b.disabled for b in app.buttons)
    assert "Pair 2 of 7" in app.progress.value
    with VoteStore(study.db_path) as store:
        (vote,) = store.votes()
    assert (vote["participant"], vote["trial"], vote["item"], vote["chosen"]) == ("p01", 0, first.item, first.b)

    resumed = StudyApp(study, "p01")  # page closed and opened again
    assert resumed.current_trial == app.current_trial
    for tab in (app, resumed):  # the same trial answered in two tabs counts once
        for player in tab.players:
            player.heard = True
    assert app.vote("A") and resumed.vote("B")
    assert resumed.current_trial.index == app.current_trial.index == 2
    with VoteStore(study.db_path) as store:
        assert [v["choice"] for v in store.votes()] == ["B", "A"]


def test_widget_state_never_names_a_system(study, pairs_csv):
    app = StudyApp(study, "p02")
    forbidden_text = [*SYSTEMS.values(), BASELINE, OURS, "demo-0", str(study.folder), "media/", ".mp4"]
    forbidden_bytes = [s.encode() for s in (*SYSTEMS.values(), "demo-0", "_baseline", "_ours")]
    while not app.finished:
        for state in _widget_states(app):
            blobs = [v for v in state.values() if isinstance(v, bytes)]
            text = json.dumps({k: v for k, v in state.items() if not isinstance(v, bytes)}, default=str)
            assert not [s for s in forbidden_text if s.lower() in text.lower()], text[:300]
            assert not [s for b in blobs for s in forbidden_bytes if s in b]
        for player in app.players:
            player.heard = True
        app.vote("A")
    assert "Thank you" in app.progress.value and app.trials.layout.display == "none"


def test_participant_app_reads_the_link_and_refuses_bad_ids(study, monkeypatch):
    monkeypatch.setenv("CINEFOLEY_STUDY", str(study.folder))
    monkeypatch.setenv("QUERY_STRING", "pid=p05&utm=x")
    app = participant_app()
    assert isinstance(app, StudyApp) and app.participant == "p05"
    for query in ("", "pid=", "pid=../../etc", "pid=a%20b"):
        notice = participant_app(query=query)
        assert not isinstance(notice, StudyApp) and "valid participant id" in notice.value
    monkeypatch.delenv("CINEFOLEY_STUDY")
    assert "without a study" in participant_app(query="pid=p01").value


# --- statistics ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(462, 620), (3, 10), (0, 5), (7, 7)])
def test_wilson_interval_matches_its_definition(k, n):
    z, p = 1.959963984540054, k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


@pytest.mark.parametrize("k,n", [(3, 10), (8, 10), (462, 620), (5, 10)])
def test_binomial_test_is_the_exact_two_sided_test(k, n):
    pmf = binom.pmf(np.arange(n + 1), n, 0.5)
    expected = min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-7)].sum())
    assert binomial_test(k, n) == pytest.approx(expected, rel=1e-6)


def test_preference_table_has_table_2_layout():
    table = preference_table(158, 462, {"baseline": "Diff-Foley", "ours": "Ours"})
    assert list(table.columns) == ["prefer Diff-Foley", "prefer Ours"]
    assert table.iloc[0].tolist() == ["158 (25.48%)", "462 (74.52%)"]  # the paper truncates to 74.51 %
    assert binomial_test(462, 620) < 1e-30


def test_analyze_excludes_by_catch_trials_and_breaks_down():
    rows = []
    for pid, ours_votes, catch in (("good", 3, [MATCH, MATCH]), ("bad", 0, [MATCH, MISMATCH]), ("nocatch", 2, [])):
        rows += [dict(participant=pid, kind=TEST, item=f"c{i}", chosen=OURS if i < ours_votes else BASELINE)
                 for i in range(3)]
        rows += [dict(participant=pid, kind=CATCH, item=f"k{i}", chosen=c) for i, c in enumerate(catch)]
    result = analyze(pd.DataFrame(rows), {"baseline": "B", "ours": "O"})
    s = result.summary
    assert result.excluded == ["bad"] and s["participants_included"] == 2
    assert (s["votes"], s["prefer_ours"], s["prefer_baseline"]) == (6, 5, 1)
    assert s["binomial_p_two_sided"] == pytest.approx(binomial_test(5, 6))
    assert (s["wilson_low"], s["wilson_high"]) == pytest.approx(wilson_interval(5, 6))
    assert result.per_clip.loc["c2", "prefer O"] == 1 and result.per_clip.loc["c0", "votes"] == 2
    assert result.per_participant.loc["bad", "catch_accuracy"] == 0.5
    assert not result.per_participant.loc["nocatch", "excluded"]
    assert analyze(pd.DataFrame(rows), {"baseline": "B", "ours": "O"}, min_catch_accuracy=0.5).excluded == []
    assert analyze(pd.DataFrame(), {"baseline": "B", "ours": "O"}).summary["share_ours"] is None


# --- coordinators: simulation, CLI, links ----------------------------------------------------------------------

def test_simulated_participants_go_through_the_widget(study):
    assert simulate_votes(study, ["p01", "p02"], p_ours=1.0) == 2 * study.n_trials
    assert simulate_votes(study, ["p01", "p02"], p_ours=1.0) == 0  # finished participants vote no more
    with VoteStore(study.db_path) as store:
        votes = store.votes()
    assert {v["chosen"] for v in votes if v["kind"] == TEST} == {OURS}
    assert {v["chosen"] for v in votes if v["kind"] == CATCH} == {MATCH}


def test_cli_create_status_analyze_export(pairs_csv, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "serve", "s", "--ids", "a,b", "--port", "9000"])
    assert (args.ids, args.port, args.func.__name__) == ("a,b", 9000, "_serve")

    folder = tmp_path / "cli_study"
    assert cli_main(["study", "create", str(pairs_csv), str(folder), "--catch", "1", "--seed", "2"]) == 0
    assert "5 clips, 1 catch trials, 6 trials per participant" in capsys.readouterr().out
    simulate_votes(folder, ["p01", "p02", "p03"], p_ours=1.0)
    assert cli_main(["study", "status", str(folder)]) == 0
    assert "3/3 participants finished, 15 test votes, 3 catch votes" in capsys.readouterr().out
    assert cli_main(["study", "analyze", str(folder), "--out", str(tmp_path / "an")]) == 0
    out = capsys.readouterr().out
    assert "prefer Diff-Foley" in out and "15 (100.00%)" in out and "excluded by catch trials: none" in out
    assert json.loads((tmp_path / "an" / "analysis.json").read_text())["prefer_ours"] == 15
    assert cli_main(["study", "export", str(folder), str(tmp_path / "votes.csv")]) == 0
    with open(tmp_path / "votes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {r["chosen_name"] for r in rows if r["kind"] == TEST} == {"Ours"}
    status = subprocess.run([sys.executable, "-m", "cinefoley.study.cli", "study", "status", str(folder), "--json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["participants_finished"] == 3


def test_cli_serve_prints_links_and_stops_voila_on_sigterm(study):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cinefoley.study.cli", "study", "serve", str(study.folder),
                             "--port", str(port), "--ids", "anna,ben"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[1:] == [f"anna\thttp://127.0.0.1:{port}/?pid=anna\n", f"ben\thttp://127.0.0.1:{port}/?pid=ben\n"]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("voila" in " ".join(c.cmdline()) for c in children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        proc.kill()


def test_links_and_server_command(study):
    links = participant_links("http://host:8866", ["p01", "p02"])
    assert links == {"p01": "http://host:8866/?pid=p01", "p02": "http://host:8866/?pid=p02"}
    with pytest.raises(ValueError):
        participant_links("http://host/", ["bad id"])
    command = " ".join(VoilaServer(study.folder, port=9999).command())
    assert "participant.ipynb" in command and "--strip_sources=True" in command
    assert "--show_tracebacks=False" in command and "--port=9999" in command
    with pytest.raises(FileNotFoundError, match="no study here"):
        VoilaServer(study.folder / "nothing")


# --- notebook 07 -----------------------------------------------------------------------------------------------

@pytest.mark.notebook
def test_notebook_07_runs_under_smoke_profile(tmp_path):
    import papermill

    out = tmp_path / "run"
    papermill.execute_notebook(str(REPO / "notebooks" / "07_preference_study.ipynb"), str(tmp_path / "07.ipynb"),
                               parameters={"profile": "smoke", "out_dir": str(out), "seed": 0},
                               kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    summary = json.loads((out / "study_analysis" / "analysis.json").read_text())
    per_participant = pd.read_csv(out / "study_analysis" / "per_participant.csv", index_col=0)
    failed = per_participant.index[per_participant["catch_accuracy"] < 1].tolist()
    assert summary["excluded"] == failed and "x01" in per_participant.index
    assert summary["votes"] == 4 * summary["participants_included"]  # 4 smoke clips each
    assert summary["prefer_ours"] + summary["prefer_baseline"] == summary["votes"]
    assert summary["wilson_low"] <= summary["share_ours"] <= summary["wilson_high"]
    votes = pd.read_csv(out / "study_votes.csv")
    assert len(votes) == 6 * 4 and not votes.duplicated(["participant", "trial"]).any()  # 4 + 2 catch, 4 people
    assert (out / "figures" / "07_preference.png").stat().st_size > 5000
    record = json.loads((out / "07_preference_study.json").read_text())
    assert record["config"]["profile"] == "smoke"
