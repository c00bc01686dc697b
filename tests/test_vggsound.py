"""VGGSound manifests: the official 4-column format, split lists, missing videos, bad rows (the real test list: test_testsets)."""

import csv
from pathlib import Path

import pytest

from cinefoley.worlds.vggsound.manifest import (
    build_manifest,
    parse_clip_name,
    read_vggsound_csv,
)
from cinefoley.cli import main as cli_main
from cinefoley.errors import MediaError

OFFICIAL = (
    '---g-f_I2yQ,1,people marching,test\n'
    '0_8-g2rof7E,49,"heart sounds, heartbeat",train\n'
    'a-b_c_d-efg,30,"donkey, ass braying",test\n'
    '\n'
    '---g-f_I2yQ,1,people marching,test\n'
)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_official_format_quoted_labels_odd_ids_and_split_filter(tmp_path):
    path = tmp_path / "vggsound.csv"
    path.write_text(OFFICIAL)
    clips = read_vggsound_csv(path)
    assert [(c.youtube_id, c.start_s, c.label, c.split) for c in clips[:3]] == [
        ("---g-f_I2yQ", 1, "people marching", "test"),
        ("0_8-g2rof7E", 49, "heart sounds, heartbeat", "train"),
        ("a-b_c_d-efg", 30, "donkey, ass braying", "test"),
    ]
    assert clips[0].clip_id == "---g-f_I2yQ_000001"
    assert [c.split for c in read_vggsound_csv(path, split="train")] == ["train"]


def test_clip_names_take_the_last_underscore_field_as_start():
    assert parse_clip_name("a_b-c_d_000030.mp4") == ("a_b-c_d", 30)
    assert parse_clip_name("abc_7") == ("abc", 7)
    assert parse_clip_name("abc.mp4") is None


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("abc,1,dog,test\nabc,x1,dog,test\n", "auto", r"line 2: start seconds 'x1' is not a whole number"),
    ("abc,1,dog,test\n\nabc,2,dog,valid\n", "auto", r"line 3: split 'valid' is not one of"),
    ("abc,1,dog,test\nabc,2,dog\n", "auto", r"line 2: expected 4 fields"),
    ("abc_000001.mp4,dog\nabc.mp4,dog\n", "list", r"line 2: 'abc\.mp4' is not <YouTube ID>_<start seconds>\.mp4"),
    ("abc_000001.mp4,dog,extra\n", "list", r"line 1: expected 2 fields"),
    ("a,b,c\n", "auto", r"line 1: expected 4 fields .* or 2"),
    ("abc_000001.mp4,\n", "list", r"line 1: empty YouTube ID or label"),
])
def test_malformed_rows_name_file_and_line(tmp_path, text, fmt, message):
    path = tmp_path / "test.csv"
    path.write_text(text)
    with pytest.raises(MediaError, match=message) as err:
        read_vggsound_csv(path, fmt=fmt)
    assert str(err.value).startswith(str(path))


def test_a_split_list_needs_its_split(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("abc_000001.mp4,dog\n")
    with pytest.raises(MediaError, match="name the split"):
        read_vggsound_csv(path)
    assert read_vggsound_csv(path, split="train")[0].split == "train"


def test_manifest_lists_found_videos_and_reports_missing(tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text(OFFICIAL)
    inside = tmp_path / "data" / "videos" / "part1"
    outside = tmp_path / "elsewhere"
    inside.mkdir(parents=True)
    outside.mkdir()
    (inside / "0_8-g2rof7E_49.mkv").touch()  # unpadded start, nested folder
    (outside / "a-b_c_d-efg.mp4").touch()  # a full-length download: the offset goes to start_s
    (inside / "notes.txt").touch()
    out = tmp_path / "data" / "vggsound_manifest.csv"
    report = build_manifest(csv_path, tmp_path, out)
    assert (report.rows, report.found, report.missing, report.full_length, report.duplicates) == (3, 2, 1, 1, 1)
    rows = _rows(out)
    assert list(rows[0]) == ["clip_id", "split", "video_path", "audio_path", "label", "start_s", "youtube_id",
                             "youtube_start_s"]
    by_id = {r["clip_id"]: r for r in rows}
    heart = by_id["0_8-g2rof7E_000049"]
    assert heart["video_path"] == "videos/part1/0_8-g2rof7E_49.mkv"  # relative to the manifest's folder
    assert (heart["start_s"], heart["youtube_start_s"], heart["label"]) == ("0.0", "49", "heart sounds, heartbeat")
    donkey = by_id["a-b_c_d-efg_000030"]
    assert Path(donkey["video_path"]).is_absolute() and donkey["start_s"] == "30.0"
    assert (out.parent / donkey["video_path"]).exists() and (out.parent / heart["video_path"]).exists()
    missing = _rows(report.missing_list)
    assert report.missing_list == tmp_path / "data" / "vggsound_manifest_missing.csv"
    assert [m["clip_id"] for m in missing] == ["---g-f_I2yQ_000001"]


def test_cli_builds_the_manifest_and_a_missing_folder_is_an_error(tmp_path, capsys):
    csv_path = tmp_path / "test.csv"
    csv_path.write_text('abc_000001.mp4,dog\n"x_y_000002.mp4","bird chirping, tweeting"\n')
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "x_y_000002.mp4").touch()
    assert cli_main(["vggsound", "manifest", "--csv", str(csv_path), "--video-dir", str(tmp_path / "v"),
                     "--out", str(tmp_path / "m.csv")]) == 0
    assert "2 clips: 1 videos found" in capsys.readouterr().out
    assert [r["label"] for r in _rows(tmp_path / "m.csv")] == ["bird chirping, tweeting"]
    with pytest.raises(MediaError, match="video folder not found"):
        build_manifest(csv_path, tmp_path / "nope", tmp_path / "m2.csv")
