"""Streamed self-distillation on a VGGSound-shaped folder: pairs, training, resuming, skipped clips, errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from diff_foley_files import CAVP_SMALL, save_cavp_file, small_cavp
from synthetic_vggsound import clip_ids, write_vggsound
from torchrun import torchrun_cli

from cinefoley.cli import main as cli_main
from cinefoley.distill import rank_batches
from cinefoley.models.cavp import load_cavp, squash_resize
from cinefoley.worlds.vggsound.stream import StreamDistillConfig, VGGSoundDistillSet, distill_vggsound, stream_clips
from cinefoley.worlds.vggsound.features import extract_features
from cinefoley.media.video import load_video

N_FRAMES = 6
BROKEN = "wide_000004"  # decodes at feature extraction, truncated before distillation


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("vggsound_distill")
    manifest = write_vggsound(root)
    teacher = small_cavp(seed=3)
    save_cavp_file(teacher, root / "cavp_epoch66.ckpt")
    report = extract_features(manifest, teacher, root / "feats", max_frames=N_FRAMES, workers=1, progress=False)
    assert [f["clip_id"] for f in report.failed] == ["garbage_000005"]
    video = root / "videos" / f"{BROKEN}.mp4"
    video.write_bytes(video.read_bytes()[:700])
    return root, manifest, teacher


def config(**kw):
    base = dict(epochs=2, batch_size=2, n_frames=N_FRAMES, size=32, num_workers=0, k=0.75, variation="cu&cm",
                lr=1e-3, seed=1)
    return StreamDistillConfig(**{**base, **kw})


def test_pairs_are_the_test_set_path_and_seeded(prepared):
    _, manifest, teacher = prepared
    clips, skipped = stream_clips(manifest, prepared[0] / "feats")
    assert [c.clip_id for c in clips] == [c for c in clip_ids("train")]
    assert [s["clip_id"] for s in skipped] == ["garbage_000005"] and "feature extraction" in skipped[0]["reason"]
    ds = VGGSoundDistillSet(clips, config(k=1.0))
    kinds = set()
    for i, clip in enumerate(clips[:3]):
        item = ds[(0, i)]
        assert item["video"].dtype == torch.uint8 and item["video"].shape == (N_FRAMES, 3, 32, 32)
        np.testing.assert_array_equal(item["c_t"].numpy(), np.load(clip.feature)["feat"][:N_FRAMES])
        assert torch.equal(ds[(0, i)]["video"], item["video"])  # same (seed, epoch, clip): same variation
        kinds.add(item["kind"])
    assert kinds <= {"close_up", "camera_move"} and "" not in kinds
    plain = VGGSoundDistillSet(clips, config(k=0.0))[(0, 0)]
    video = load_video(clips[0].video, n_frames=N_FRAMES)
    assert plain["kind"] == "" and torch.equal(plain["video"], squash_resize(video, 32))
    assert not torch.equal(ds[(0, 0)]["video"], ds[(1, 0)]["video"])  # a new draw every epoch


def test_a_streamed_close_up_is_cropped_at_native_size_then_resized(prepared):
    """VGG-CU's recipe: crop the window out of the native frame, resize it back to the frame (bilinear),
    then squash-resize to the encoder's input. Resizing to the input first gives other pixels."""
    _, manifest, _ = prepared
    clips, _ = stream_clips(manifest, prepared[0] / "feats")
    cfg = config(k=1.0, variation="cu")
    ds = VGGSoundDistillSet(clips, cfg)
    for i in (0, 1):
        video = load_video(clips[i].video, n_frames=N_FRAMES)
        h, w = video.shape[2:]
        params = cfg.sampler.draw_for_clip(clips[i].clip_id, 0, cfg.seed, N_FRAMES, h, w)
        top, left, bh, bw = params.boxes[0]
        assert params.kind == "close_up" and (bh, bw) != (h, w) and h != 32
        crop = torch.nn.functional.interpolate(video[:, :, top:top + bh, left:left + bw].float(), size=(h, w),
                                               mode="bilinear", align_corners=False)
        expected = squash_resize(crop.round().clamp(0, 255).to(torch.uint8), 32)
        got = ds[(0, i)]["video"]
        diff = (got.float() - expected.float()).abs()  # models.cavp.varied_input: uint8 kernels, the same to 2 levels
        assert diff.max() <= 2 and diff.mean() <= 0.5
        small = squash_resize(video, 32).float()  # the wrong order: resize first, then the scaled window
        s_top, s_left, s_h, s_w = (round(v * 32 / d) for v, d in zip((top, left, bh, bw), (h, w, h, w)))
        wrong = torch.nn.functional.interpolate(small[:, :, s_top:s_top + s_h, s_left:s_left + s_w], size=(32, 32),
                                                mode="bilinear", align_corners=False).round().clamp(0, 255)
        assert (got.float() - wrong).abs().mean() > 1.0


def test_distillation_trains_skips_and_resumes_exactly(prepared, tmp_path):
    root, manifest, teacher = prepared
    student, history = distill_vggsound(teacher, manifest, root / "feats", tmp_path / "full",
                                        config(num_workers=2), progress=False)
    assert len(history["step_loss"]) == 4 and np.isfinite(history["step_loss"]).all()
    assert len(history["epoch_loss"]) == 2
    changed = [not torch.equal(a, b) for a, b in zip(student.state_dict().values(), teacher.state_dict().values())
               if a.is_floating_point()]
    assert any(changed)
    skipped = pd.read_csv(tmp_path / "full" / "unusable.csv").set_index("clip_id")
    assert sorted(skipped.index) == ["garbage_000005", BROKEN] and skipped.loc[BROKEN, "reason"]
    reloaded = load_cavp(tmp_path / "full" / "student_state.pt", **CAVP_SMALL)
    for a, b in zip(reloaded.state_dict().values(), student.state_dict().values()):
        assert torch.equal(a, b)

    # killed after 3 steps (mid-epoch 2) and resumed, with no workers: the same weights as one run
    distill_vggsound(teacher, manifest, root / "feats", tmp_path / "resumed", config(max_steps=3), progress=False)
    assert not (tmp_path / "resumed" / "student_state.pt").exists()
    resumed, history2 = distill_vggsound(teacher, manifest, root / "feats", tmp_path / "resumed", config(),
                                         progress=False)
    assert history2["step_loss"] == pytest.approx(history["step_loss"], abs=1e-6)
    for a, b in zip(resumed.state_dict().values(), student.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_missing_feature_is_an_error_naming_the_file(prepared, tmp_path):
    root, manifest, teacher = prepared
    feats = tmp_path / "feats"
    shutil.copytree(root / "feats", feats)
    (feats / "square_000002.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"feats/square_000002\.npz: no cached teacher feature"):
        distill_vggsound(teacher, manifest, feats, tmp_path / "run", config(), progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def distill_argv(root, manifest, out, *extra: str) -> list[str]:
    """``cinefoley vggsound distill`` on the prepared folder with :func:`config`'s settings (CAVP's 224 px)."""
    return ["vggsound", "distill", "--manifest", str(manifest), "--features", str(root / "feats"), "--cavp",
            str(root / "cavp_epoch66.ckpt"), "--out", str(out), "--device", "cpu", "--workers", "0",
            "--batch-size", "2", "--n-frames", str(N_FRAMES), "--epochs", "2", "--lr", "1e-3", "--seed", "1",
            "--variation", "cu&cm", "--k", "0.75", "--cavp-stage-blocks", *map(str, CAVP_SMALL["stage_blocks"]),
            "--cavp-base-channels", str(CAVP_SMALL["base_channels"]), *extra]


def test_cli_runs_a_step(prepared, tmp_path, capsys):
    root, manifest, _ = prepared
    assert cli_main(distill_argv(root, manifest, tmp_path / "run", "--workers", "1", "--max-steps", "1")) == 0
    assert "stopped after 1 steps on 1 rank(s)" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step"], ckpt["config"]["n_frames"]) == (0, 1, N_FRAMES)


@pytest.fixture(scope="module")
def one_process_run(prepared, tmp_path_factory):
    """The CLI's run in this one process: the student every torchrun run must match."""
    root, manifest, _ = prepared
    out = tmp_path_factory.mktemp("one_process")
    assert cli_main(distill_argv(root, manifest, out)) == 0
    return torch.load(out / "student_state.pt")


def assert_same_student(state: dict, reference: dict, start: dict) -> None:
    """Within float rounding of ``reference``: DDP's all-reduce sums the halves' gradients in another order
    and ranks of one thread convolve in another order than this process, and Adam's 1/sqrt(v) magnifies
    that for near-zero gradients (measured 2e-7 at equal threads, 1e-5 here: 0.25 % of the move); a rank
    that skipped the averaging would be off by about the move itself."""
    floats = [k for k, v in reference.items() if v.is_floating_point()]
    moved = max((reference[k] - start[k]).abs().max().item() for k in floats)
    apart = max((state[k] - reference[k]).abs().max().item() for k in floats)
    assert set(state) == set(reference) and apart < 0.01 * moved, (apart, moved)


@pytest.mark.slow
def test_torchrun_two_ranks_train_one_process_weights_past_a_broken_clip(prepared, one_process_run, tmp_path):
    root, manifest, teacher = prepared
    clips, _ = stream_clips(manifest, root / "feats")
    broken = [c.clip_id for c in clips].index(BROKEN)
    # seed 1 deals the broken clip to rank 1 alone, as its whole share of a step (batch 2 over 2 ranks):
    # rank 1 must still join that step's all-reduce, and rank 0 must learn of the clip from rank 1
    for epoch in range(2):
        assert [[broken]] == [b for b in rank_batches(config(), epoch, len(clips), 0, rank=1, world=2) if broken in b]
        assert not any(broken in b for b in rank_batches(config(), epoch, len(clips), 0, rank=0, world=2))
    out = torchrun_cli(distill_argv(root, manifest, tmp_path / "ddp"))
    assert "finished after 4 steps on 2 rank(s)" in out
    assert json.loads((tmp_path / "ddp" / "distill.json").read_text())["results"]["ranks"] == 2
    assert BROKEN in pd.read_csv(tmp_path / "ddp" / "unusable.csv")["clip_id"].tolist()
    assert_same_student(torch.load(tmp_path / "ddp" / "student_state.pt"), one_process_run, teacher.state_dict())


@pytest.mark.slow
def test_torchrun_resumes_across_rank_counts(prepared, one_process_run, tmp_path):
    """1 process for a step, 2 ranks on two c10d 'nodes' to step 3, 1 process to the end: one run's weights."""
    root, manifest, teacher = prepared
    run = tmp_path / "run"
    assert cli_main(distill_argv(root, manifest, run, "--max-steps", "1")) == 0
    assert "stopped after 3 steps on 2 rank(s)" in torchrun_cli(distill_argv(root, manifest, run, "--max-steps", "3"),
                                                                 nodes=2, per_node=1)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step"], len(ckpt["history"]["step_loss"])) == (1, 1, 3)
    assert cli_main(distill_argv(root, manifest, run)) == 0
    assert_same_student(torch.load(run / "student_state.pt"), one_process_run, teacher.state_dict())


def test_no_usable_clip_is_an_error_naming_the_manifest(prepared, tmp_path):
    root, manifest, teacher = prepared
    feats = tmp_path / "feats"
    feats.mkdir()
    pd.DataFrame({"clip_id": clip_ids("train") + ["garbage_000005"], "video_path": "x", "reason": "broken"}).to_csv(
        feats / "unreadable.csv", index=False)
    with pytest.raises(ValueError, match=r"manifest\.csv: no clip to train on"):
        distill_vggsound(teacher, manifest, feats, tmp_path / "run", config(), progress=False)
