"""Sampling with classifier-free guidance and DPM-Solver++, and sharded, resumable generation."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import nn
from torchrun import free_port, one_thread, torchrun_cli

import cinefoley.generate as gen
from cinefoley.models.conditioning import VideoFeatEmbedder
from cinefoley.generate import (GenerationConfig, dpm_solver, generate_set, initial_noise, read_generated,
                                sample_latents)

SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")


class TinyLDM(nn.Module):
    """The generator interface at toy size: a 4-channel latent of 16 mel bins / 8, 2 columns per frame."""

    latent_geometry = (2, 2)
    noise_schedule = SCHEDULE

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.unet = UNet2DConditionModel(sample_size=(2, 8), in_channels=4, out_channels=4, layers_per_block=1,
                                         block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
                                         attention_head_dim=4,
                                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
        self.cond = VideoFeatEmbedder(8, 16, seq_len=8)

    def context(self, feats, uncond=False):
        return torch.zeros(*feats.shape[:-1], 16) if uncond else self.cond(feats)

    def decode_latent(self, z):
        return torch.sigmoid(F.interpolate(z[:, :1], scale_factor=8)[:, 0])


def test_scheduler_is_diff_foleys_time_uniform_dpm_solver_pp():
    sch = dpm_solver(SCHEDULE, 25)
    assert sch.config.algorithm_type == "dpmsolver++" and sch.config.solver_order == 2
    assert sch.timesteps[:3].tolist() == [999, 959, 919] and sch.timesteps[-1].item() == 40
    assert len(sch.timesteps) == 25


def test_batched_cfg_equals_separate_calls_and_w1_ignores_the_unconditional_branch():
    model = TinyLDM()
    feats = torch.randn(3, 4, 8)
    noise = initial_noise((4, 2, 8), [1, 2, 3])
    a = sample_latents(model, feats, noise, steps=5)
    b = sample_latents(model, feats, noise, steps=5, batched_cfg=False)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # with w = 1, eps = eps(z, c): a different unconditional context must not matter
    w1 = sample_latents(model, feats, noise, steps=5, guidance=1.0)
    model.context = lambda f, uncond=False: torch.randn(*f.shape[:-1], 16) if uncond else model.cond(f)
    torch.testing.assert_close(w1, sample_latents(model, feats, noise, steps=5, guidance=1.0))
    # and guidance really changes the result otherwise
    assert (a - w1).abs().max() > 1e-3


@pytest.mark.parametrize("w", [0.0, 3.0])
def test_guidance_is_eps_u_plus_w_times_eps_c_minus_eps_u(w):
    """The sampler against a loop written from the formula eps = eps_u + w (eps_c - eps_u)."""
    model = TinyLDM()
    feats = torch.randn(2, 4, 8)
    noise = initial_noise((4, 2, 8), [5, 6])
    sch = dpm_solver(SCHEDULE, 4)
    cond, uncond = model.context(feats), model.context(feats, uncond=True)
    z = noise * sch.init_noise_sigma
    with torch.no_grad():
        for t in sch.timesteps:
            x = sch.scale_model_input(z, t)
            eps_u = model.unet(x, t, encoder_hidden_states=uncond).sample
            eps_c = model.unet(x, t, encoder_hidden_states=cond).sample
            z = sch.step(eps_u + w * (eps_c - eps_u), t, z).prev_sample
        got = sample_latents(model, feats, noise, steps=4, guidance=w)
    torch.testing.assert_close(got, z, atol=1e-4, rtol=1e-4)


def _features(n=5):
    g = torch.Generator().manual_seed(0)
    return {f"clip{i}": torch.randn(4, 8, generator=g) for i in range(n)}


class CountingVocoder:
    def __call__(self, mels):
        return mels.mean(1).repeat_interleave(4, dim=-1)


def test_generate_set_writes_shards_and_resumes_without_duplicates(tmp_path, monkeypatch):
    cfg = GenerationConfig(samples_per_clip=2, steps=3, clips_per_shard=2, batch_size=3)
    full = read_generated(generate_set(TinyLDM(), _features(), tmp_path / "full", cfg, vocoder=CountingVocoder(),
                                       progress=False))
    assert sorted(p.name for p in (tmp_path / "full").glob("shard_*.npz")) == \
        ["shard_00000.npz", "shard_00001.npz", "shard_00002.npz"]
    assert full["mel"].shape == (10, 16, 64) and full["wav"].shape == (10, 256) and full["wav"].dtype == np.float32
    with np.load(tmp_path / "full" / "shard_00000.npz") as shard:
        assert shard["wav"].dtype == np.int16 and shard["wav_gain"].shape == (4,)  # 2 clips x 2 samples
    # kill the run while it writes the second shard
    real = gen.atomic_savez
    calls = {"n": 0}

    def dying_savez(path, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(path, **arrays)

    monkeypatch.setattr(gen, "atomic_savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        generate_set(TinyLDM(), _features(), tmp_path / "resumed", cfg, vocoder=CountingVocoder(), progress=False)
    assert [p.name for p in (tmp_path / "resumed").iterdir() if p.name.startswith("shard")] == ["shard_00000.npz"]
    monkeypatch.setattr(gen, "atomic_savez", real)
    resumed = read_generated(generate_set(TinyLDM(), _features(), tmp_path / "resumed", cfg,
                                          vocoder=CountingVocoder(), progress=False))
    assert list(zip(resumed["clip_id"], resumed["sample"])) == list(zip(full["clip_id"], full["sample"]))
    assert len(set(zip(resumed["clip_id"], resumed["sample"]))) == 10
    np.testing.assert_allclose(resumed["mel"].astype(np.float32), full["mel"].astype(np.float32), atol=1e-3)


def test_each_clip_and_sample_has_its_own_seed_whatever_the_subset(tmp_path):
    cfg = GenerationConfig(samples_per_clip=2, steps=3, clips_per_shard=4)
    feats = _features()
    everything = read_generated(generate_set(TinyLDM(), feats, tmp_path / "a", cfg, vocoder=CountingVocoder(),
                                             progress=False))
    subset = read_generated(generate_set(TinyLDM(), {k: feats[k] for k in ("clip3",)}, tmp_path / "b", cfg,
                                         vocoder=CountingVocoder(), progress=False))
    rows = everything["clip_id"] == "clip3"
    np.testing.assert_allclose(subset["mel"].astype(np.float32), everything["mel"][rows].astype(np.float32),
                               atol=1e-3)
    assert not np.allclose(subset["mel"][0], subset["mel"][1])  # two samples of one clip differ


def assert_same_shards(one: Path, two: Path, *, count: int, wav_steps: int = 0) -> None:
    """The same ``count`` shard files in both folders, with equal arrays (the 16-bit sounds within
    ``wav_steps`` steps)."""
    names = sorted(p.name for p in one.glob("shard_*.npz"))
    assert sorted(p.name for p in two.glob("shard_*.npz")) == names and len(names) == count
    for name in names:
        with np.load(one / name) as x, np.load(two / name) as y:
            assert list(x) == list(y) and all(np.array_equal(x[k], y[k]) for k in ("clip_id", "sample", "mel"))
            assert np.abs(x["wav"].astype(int) - y["wav"]).max() <= wav_steps, name


def _generate_on_rank(rank, world, port, out_dir, cfg):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    generate_set(TinyLDM(), _features(), out_dir, cfg, vocoder=CountingVocoder(), progress=False)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_write_the_shards_of_one_process(tmp_path):
    """Rank r writes shards r, r + 2, …: together the files one process writes, each shard once."""
    cfg = GenerationConfig(samples_per_clip=2, steps=3, clips_per_shard=2, batch_size=3)
    with one_thread():
        generate_set(TinyLDM(), _features(), tmp_path / "one", cfg, vocoder=CountingVocoder(), progress=False)
    mp.spawn(_generate_on_rank, args=(2, free_port(), str(tmp_path / "two"), cfg), nprocs=2, join=True)
    assert_same_shards(tmp_path / "one", tmp_path / "two", count=3)
    record = json.loads((tmp_path / "two" / "generation.json").read_text())["results"]
    assert (record["shards_written_now"], record["ranks"]) == (3, 2)


class LoudVocoder:
    """Waveforms from -2 to 2: beyond what a 16-bit wav holds."""

    def __call__(self, mels):
        return torch.linspace(-2, 2, 256).expand(len(mels), 256)


def test_sounds_are_stored_as_16_bit_pcm_and_read_back_as_float(tmp_path):
    cfg = GenerationConfig(samples_per_clip=1, steps=2, clips_per_shard=8)
    out = generate_set(TinyLDM(), _features(2), tmp_path, cfg, vocoder=LoudVocoder(), progress=False)
    with np.load(out / "shard_00000.npz") as z:
        assert z["wav"].dtype == np.int16 and z["wav"].min() == -32767 and z["wav"].max() == 32767
    wav = read_generated(out)["wav"]
    assert wav.dtype == np.float32
    # too loud for full scale: scaled into it with a gain, so the generator's level comes back unclipped
    np.testing.assert_allclose(wav[0], np.linspace(-2, 2, 256), atol=2 * 0.5 / 32767 + 1e-6)


@pytest.mark.slow
def test_cli_under_torchrun_writes_the_shards_of_one_process(tmp_path):
    """``cinefoley vggsound generate`` of a manifest's clips: 2 gloo ranks write one process's shards; a clip
    without features and one shorter than the window are left out and listed."""
    from diff_foley_files import LDM_SMALL, save_lightning_file, small_ldm

    from cinefoley.cli import main as cli_main
    from cinefoley.models.ldm import ldm_state_dict

    save_lightning_file(ldm_state_dict(small_ldm()), tmp_path / "ldm.ckpt", 240)
    feats = tmp_path / "feats"
    feats.mkdir()
    g = np.random.default_rng(0)
    for i, frames in enumerate([8, 8, 8, 3]):
        np.savez(feats / f"clip{i}.npz", feat=g.standard_normal((frames, 8)).astype(np.float32))
    ids = ["clip0", "clip1", "clip2", "clip3", "nofeat"]
    pd.DataFrame({"clip_id": ids, "video_path": [f"{c}.mp4" for c in ids]}).to_csv(tmp_path / "m.csv", index=False)

    def argv(out):
        return ["vggsound", "generate", "--features", str(feats), "--manifest", str(tmp_path / "m.csv"), "--ldm",
                str(tmp_path / "ldm.ckpt"), "--model-options", json.dumps({"ldm": {"config": LDM_SMALL}}),
                "--out", str(out), "--samples", "1", "--steps", "2", "--window", "8", "--clips-per-shard", "1",
                "--griffin-lim-iters", "4", "--device", "cpu"]

    with one_thread():
        assert cli_main(argv(tmp_path / "one")) == 0
    printed = torchrun_cli(argv(tmp_path / "two"))
    assert printed.count("3 clips x 1 sounds") == 1 and "2 clips left out" in printed
    # Griffin-Lim's FFTs round differently in another process: one 16-bit step at most (measured)
    assert_same_shards(tmp_path / "one", tmp_path / "two", count=3, wav_steps=1)
    left_out = dict(json.loads((tmp_path / "two" / "left_out.json").read_text()))
    assert sorted(left_out) == ["clip3", "nofeat"] and "fewer than the 8-frame window" in left_out["clip3"]
