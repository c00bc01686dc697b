"""check-checkpoints: find Diff-Foley's released files, report whether each loads, never crash."""

import argparse
import json

import pytest
import torch
from diff_foley_files import CAVP_SMALL, CLASSIFIER_SMALL, LDM_SMALL, write_released_folder

from cinefoley.errors import CheckpointError
from cinefoley.models.check import check_checkpoints, register
from cinefoley.models.checkpoints import read_state_dict

SMALL = {"cavp": CAVP_SMALL, "ldm": {"config": LDM_SMALL}, "eval_classifier": {"config": CLASSIFIER_SMALL}}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return write_released_folder(tmp_path_factory.mktemp("ckpts") / "diff_foley_ckpt")


def test_folder_with_all_three_files_loads(released):
    results = {r.kind: r for r in check_checkpoints(released["cavp"].parent.parent, options=SMALL)}
    assert all(r.found and r.loads and not r.error for r in results.values())
    assert results["cavp"].keys["ignored"] == 4  # the audio branch
    assert results["ldm"].keys["missing"] == results["ldm"].keys["unexpected"] == 0
    assert results["ldm"].keys["used"] > 300
    assert results["cavp"].path == str(released["cavp"])


def test_broken_and_absent_files_are_reported_not_raised(tmp_path, released):
    sd = read_state_dict(released["eval_classifier"])
    del sd["model.classifier.bias"]
    sd["model.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "eval_classifier.ckpt"
    torch.save({"state_dict": sd}, broken)
    results = {r.kind: r for r in check_checkpoints(
        {"eval_classifier": broken, "cavp": tmp_path / "absent.ckpt"}, options=SMALL)}
    clf = results["eval_classifier"]
    assert clf.found and not clf.loads
    assert (clf.keys["missing"], clf.keys["unexpected"]) == (1, 1)
    assert "model.classifier.bias" in clf.error and str(broken) in clf.error
    assert not results["cavp"].found and results["cavp"].error == "file not found"


def test_cli_reports_and_sets_the_exit_code(tmp_path, released, capsys):
    parser = argparse.ArgumentParser(prog="cinefoley")
    register(parser.add_subparsers(dest="command"))
    # the default (full-size R50) CAVP config does not fit the small file: reported, exit code 1
    args = parser.parse_args(["check-checkpoints", "--cavp", str(released["cavp"]), "--json"])
    assert args.func(args) == 1
    (report,) = json.loads(capsys.readouterr().out)
    assert report["kind"] == "cavp" and report["found"] and not report["loads"]
    assert report["keys"]["mismatched"] > 0 and "mis-shaped" in report["error"]
    args = parser.parse_args(["check-checkpoints", str(tmp_path)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.count("NOT FOUND") == 3 and "ldm_epoch240.ckpt" in out
    args = parser.parse_args(["check-checkpoints"])
    with pytest.raises(SystemExit, match="give a folder"):
        args.func(args)


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="garbage.ckpt: cannot read checkpoint"):
        read_state_dict(bad)
    torch.save({"state_dict": {"a": torch.zeros(1), "b": 3}}, tmp_path / "mixed.ckpt")
    with pytest.raises(CheckpointError, match="1 non-tensor entries"):
        read_state_dict(tmp_path / "mixed.ckpt")
