"""``study create`` refuses a pair whose two files do not show the same pictures, naming the row and what differs."""

from __future__ import annotations

import pytest
from own_media import write_clip

from cinefoley.cli import main
from cinefoley.study import create_study, read_pairs
from cinefoley.study.media import transcode
from cinefoley.study.pairs import MAX_PICTURE_DIFF, picture_differences


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    write_clip(d / "gunshot_03.mp4", fps=24, seconds=8.0, size=(72, 128), tone_hz=300)
    transcode(d / "gunshot_03.mp4", d / "gunshot_03_ours.mp4", audio_src=write_clip(
        d / "tone.mp4", fps=24, seconds=8.0, size=(72, 128), tone_hz=900))  # the same pictures, encoded again
    write_clip(d / "unrelated.mp4", fps=24, seconds=5.0, size=(72, 128), first=97, tone_hz=500)
    write_clip(d / "rain.mp4", fps=24, seconds=8.0, size=(72, 128), first=160, tone_hz=700)
    write_clip(d / "gunshot_small.mp4", fps=24, seconds=8.0, size=(36, 64))
    return d


def test_one_video_encoded_twice_shows_the_same_pictures(clips):
    assert picture_differences(clips / "gunshot_03.mp4", clips / "gunshot_03_ours.mp4") == []


@pytest.mark.parametrize("other, says", [
    ("unrelated.mp4", ["gunshot_03.mp4 lasts 8.00 s, unrelated.mp4 5.00 s (more than one frame apart)",
                       "the pictures differ"]),
    ("rain.mp4", ["the pictures differ"]),
    ("gunshot_small.mp4", ["gunshot_03.mp4 is 128x72 px, gunshot_small.mp4 64x36 px"])])
def test_different_videos_differ(clips, other, says):
    problems = picture_differences(clips / "gunshot_03.mp4", clips / other)
    assert len(problems) == len(says) and all(s in p for s, p in zip(says, problems))


def test_the_pictures_differ_by_more_than_encoding_noise(clips):
    (problem,) = picture_differences(clips / "gunshot_03.mp4", clips / "rain.mp4")
    by = float(problem.split(" by ")[1].split(" of 255")[0])
    assert by > 2 * MAX_PICTURE_DIFF


def test_study_create_refuses_the_coordinators_slip_naming_each_row(clips, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text("clip_id,baseline,ours\n"
                   f"gunshot_03,{clips / 'gunshot_03.mp4'},{clips / 'gunshot_03_ours.mp4'}\n"
                   f"door_slam,{clips / 'gunshot_03.mp4'},{clips / 'unrelated.mp4'}\n"
                   f"rain,{clips / 'rain.mp4'},{clips / 'gunshot_03.mp4'}\n")
    code = main(["study", "create", str(csv), str(tmp_path / "study"), "--catch", "1"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "study").exists()
    assert "2 row(s) do not" in err and f"{csv}:2 " not in err
    assert f"{csv}:3 (clip 'door_slam'): gunshot_03.mp4 lasts 8.00 s, unrelated.mp4 5.00 s" in err
    assert f"{csv}:4 (clip 'rain'): the pictures differ" in err

    csv.write_text("clip_id,baseline,ours\n"
                   f"gunshot_03,{clips / 'gunshot_03.mp4'},{clips / 'gunshot_03_ours.mp4'}\n")
    study = create_study(csv, tmp_path / "study")
    assert [c["clip_id"] for c in study.clips] == [p.clip_id for p in read_pairs(csv)]
