"""Self-distillation: the loss against its definition, the feature cache, k, resuming, DDP on CPU."""

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torchrun import free_port

from cinefoley.distill import (DistillConfig, cache_teacher_features, distill, distill_loss, epoch_order, load_features,
                               rank_batches)
from cinefoley.models.cinetoy.encoders import ToyVideoEncoder, ToyVideoEncoderConfig


def small_teacher(seed=0):
    torch.manual_seed(seed)
    return ToyVideoEncoder(ToyVideoEncoderConfig(input_size=32, widths=(8, 8, 16, 16), embed_dim=32)).eval()


def clips(n=12, t=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, 3, size, size), generator=g, dtype=torch.uint8), [f"c{i:03d}" for i in range(n)]


def test_distill_loss_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    c_t, c_s = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    cos = [[1 - (c_t[b, t] @ c_s[b, t]) / (c_t[b, t].norm() * c_s[b, t].norm()) for t in range(5)] for b in range(3)]
    mse = ((c_t - c_s) ** 2).sum() / c_t.numel()
    assert distill_loss(c_t, c_s).item() == pytest.approx(float(torch.tensor(cos).mean() + mse), rel=1e-5)
    assert distill_loss(c_t, c_t).item() == pytest.approx(0.0, abs=1e-6)
    # scaling c_s leaves the cosine term alone, only MSE grows
    assert distill_loss(c_t, 2 * c_t).item() == pytest.approx(float((c_t ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError):
        distill_loss(c_t, c_s[:, :4])


def test_teacher_features_are_cached_once_in_diff_foley_layout(tmp_path):
    teacher, (videos, ids) = small_teacher(), clips(5)
    cache_teacher_features(teacher, videos, ids, tmp_path, progress=False)
    z = np.load(tmp_path / "c000.npz")
    assert list(z.keys()) == ["feat"] and z["feat"].shape == (4, 32) and z["feat"].dtype == np.float32
    with torch.no_grad():
        torch.testing.assert_close(load_features(tmp_path, ids), teacher(videos))
    # a second call must not run the teacher again
    mtimes = [(tmp_path / f"{i}.npz").stat().st_mtime_ns for i in ids]
    broken = small_teacher()
    broken.forward = lambda v: (_ for _ in ()).throw(AssertionError("teacher ran again"))
    cache_teacher_features(broken, videos, ids, tmp_path, progress=False)
    assert mtimes == [(tmp_path / f"{i}.npz").stat().st_mtime_ns for i in ids]


def test_k_zero_trains_on_unvaried_clips_only(tmp_path, monkeypatch):
    seen = []
    import cinefoley.distill as d
    real = d.apply_batch
    monkeypatch.setattr(d, "apply_batch", lambda v, p: (seen.extend(p), real(v, p))[1])
    videos, ids = clips(8)
    distill(small_teacher(), videos, ids, tmp_path, DistillConfig(k=0.0, epochs=1, batch_size=4), progress=False)
    assert len(seen) == 8 and all(p is None for p in seen)
    seen.clear()
    distill(small_teacher(), videos, ids, tmp_path / "k1", DistillConfig(k=1.0, epochs=1, batch_size=4), progress=False)
    assert len(seen) == 8 and all(p is not None and p.kind == "close_up" for p in seen)


def test_student_starts_as_teacher_and_teacher_stays_frozen(tmp_path):
    teacher = small_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    videos, ids = clips(8)
    student, hist = distill(teacher, videos, ids, tmp_path, DistillConfig(epochs=2, batch_size=4, lr=1e-3),
                            progress=False)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert len(hist["epoch_loss"]) == 2 and len(hist["step_loss"]) == 4
    assert (tmp_path / "distill.json").exists() and (tmp_path / "student_state.pt").exists()


def test_distillation_pulls_varied_features_towards_the_teacher(tmp_path):
    teacher, (videos, ids) = small_teacher(), clips(16)
    cfg = DistillConfig(k=1.0, epochs=12, batch_size=8, lr=2e-3)
    from cinefoley.variations import apply_batch, params_for_clip
    params = [params_for_clip(i, "close_up", 4, 32, 32) for i in ids]
    with torch.no_grad():
        c_t = teacher(videos)
        before = distill_loss(c_t, teacher(apply_batch(videos, params))).item()
    student, _ = distill(teacher, videos, ids, tmp_path, cfg, progress=False)
    with torch.no_grad():
        after = distill_loss(c_t, student(apply_batch(videos, params))).item()
    assert after < 0.7 * before


def test_the_learning_rate_decays_as_a_cosine_over_the_whole_run(tmp_path, monkeypatch):
    cfg = DistillConfig(lr=4e-4)
    assert [cfg.learning_rate(s, 100) for s in (0, 50, 100)] == pytest.approx([4e-4, 2e-4, 0.0])
    assert cfg.learning_rate(25, 100) == pytest.approx(2e-4 * (1 + np.cos(np.pi / 4)))
    assert DistillConfig(lr=4e-4, lr_schedule="constant").learning_rate(77, 100) == 4e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        DistillConfig(lr_schedule="step").learning_rate(0, 10)
    import cinefoley.distill as d

    rates, real = [], d.student_step
    monkeypatch.setattr(d, "student_step", lambda m, opt, *a: (rates.append(opt.param_groups[0]["lr"]), real(m, opt, *a))[1])
    videos, ids = clips(8)
    distill(small_teacher(), videos, ids, tmp_path, DistillConfig(lr=4e-4, epochs=2, batch_size=4), progress=False)
    assert rates == pytest.approx([4e-4 * 0.5 * (1 + np.cos(np.pi * s / 4)) for s in range(4)])  # 2 epochs x 2 steps


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    videos, ids = clips(12)
    cfg = DistillConfig(epochs=3, batch_size=4, checkpoint_every=2)
    full, _ = distill(small_teacher(), videos, ids, tmp_path / "full", cfg, progress=False)
    # "killed" after 5 of 9 steps (mid-epoch), then resumed from the checkpoint by a new call
    distill(small_teacher(), videos, ids, tmp_path / "resumed", DistillConfig(**{**cfg.__dict__, "max_steps": 5}),
            progress=False)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    resumed, hist = distill(small_teacher(), videos, ids, tmp_path / "resumed", cfg, progress=False)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert len(hist["step_loss"]) == 9


def test_naive_path_gives_the_same_training_signal(tmp_path):
    videos, ids = clips(8)
    base = dict(epochs=1, batch_size=4, k=1.0)
    fast, _ = distill(small_teacher(), videos, ids, tmp_path / "a", DistillConfig(**base), progress=False)
    naive, _ = distill(small_teacher(), videos, ids, tmp_path / "b",
                       DistillConfig(**base), teacher_targets="forward", batched_variations=False, progress=False)
    for k, v in fast.state_dict().items():
        torch.testing.assert_close(v, naive.state_dict()[k], atol=2e-4, rtol=1e-3)


def _ddp_worker(rank, world, port, out_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    videos, ids = clips(8)
    distill(small_teacher(), videos, ids, out_dir, DistillConfig(epochs=2, batch_size=4, k=1.0), progress=False)
    dist.destroy_process_group()


def test_each_rank_takes_only_its_share_of_every_global_batch():
    """3 ranks, 10 clips, batches of 4: the shares of a step are disjoint, in rank order they are that step's
    slice of the epoch's order (sizes 1, 1, 2; 0, 1, 1 for the last, 2-clip batch), and resuming skips steps."""
    cfg = DistillConfig(batch_size=4, seed=3)
    order = epoch_order(cfg, 1, 10).tolist()
    shares = [rank_batches(cfg, 1, 10, 0, rank, 3) for rank in range(3)]
    assert [[len(b) for b in s] for s in shares] == [[1, 1, 0], [1, 1, 1], [2, 2, 1]]
    for step in range(3):
        assert sum((s[step] for s in shares), []) == order[4 * step:4 * step + 4]
    assert rank_batches(cfg, 1, 10, 2, 2, 3) == [order[9:10]]
    assert rank_batches(cfg, 1, 10, 0) == [order[0:4], order[4:8], order[8:10]]  # one process takes it all


@pytest.mark.slow
def test_ddp_with_two_gloo_processes_matches_one_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    videos, ids = clips(8)
    single, _ = distill(small_teacher(), videos, ids, tmp_path / "single",
                        DistillConfig(epochs=2, batch_size=4, k=1.0), progress=False)
    ddp_state = torch.load(tmp_path / "ddp" / "student_state.pt")
    start, single = small_teacher().state_dict(), single.state_dict()
    moved = max((v - start[k]).abs().max().item() for k, v in single.items() if v.is_floating_point())
    apart = max((ddp_state[k] - v).abs().max().item() for k, v in single.items() if v.is_floating_point())
    # all-reduce sums the two halves' gradients in another order than one process does, and Adam's
    # 1/sqrt(v) magnifies that rounding for near-zero gradients (CI saw 5e-5 of a 2e-3 move); a rank
    # that skipped the averaging would be as far off as the move itself
    assert set(ddp_state) == set(single) and apart < 0.1 * moved


def test_the_real_cavp_encoder_distils_from_uint8_clips(tmp_path):
    from diff_foley_files import small_cavp

    videos, ids = clips(4, t=4, size=32)
    teacher = small_cavp().eval()
    student, hist = distill(teacher, videos, ids, tmp_path, DistillConfig(epochs=1, batch_size=2, k=1.0),
                            progress=False)
    assert len(hist["step_loss"]) == 2 and np.isfinite(hist["step_loss"]).all()
    assert load_features(tmp_path / "teacher_feats", ids).shape == (4, 4, 512)
