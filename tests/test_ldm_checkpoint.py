"""Diff-Foley's LDM: ldm_epoch240.ckpt-format files <-> diffusers UNet/VAE + the conditioning embedder."""

import pickle

import pytest
import torch
from diff_foley_files import LDM_SMALL, save_lightning_file, small_ldm
from diffusers import DDPMScheduler

from cinefoley.models.checkpoints import KeyMismatchError
from cinefoley.errors import CheckpointError
from cinefoley.models.ldm import (
    NOISE_SCHEDULE,
    build_ldm,
    feature_windows,
    ldm_state_dict,
    load_ldm,
    schedule_buffers,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = small_ldm(seed=3)
    path = tmp_path_factory.mktemp("ldm") / "ldm_epoch240.ckpt"
    sd = ldm_state_dict(model)
    save_lightning_file(sd, path, epoch=240)
    return model, sd, path


def test_full_size_layout_is_sd_v1_with_diff_foley_conditioning():
    with torch.device("meta"):
        sd = ldm_state_dict(build_ldm())
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # an SD-v1 checkpoint has 686 UNet and 248 VAE tensors
    assert sum(k.startswith("model.diffusion_model.") for k in sd) == 686
    assert sum(k.startswith("first_stage_model.") for k in sd) == 248
    assert shapes["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert shapes["model.diffusion_model.input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert shapes["model.diffusion_model.middle_block.1.proj_in.weight"] == (1280, 1280, 1, 1)
    assert shapes["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes["model.diffusion_model.output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert shapes["model.diffusion_model.out.2.weight"] == (4, 320, 3, 3)
    assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert shapes["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert shapes["first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["cond_stage_model.embedder.0.weight"] == (768, 512)
    assert shapes["cond_stage_model.pos_emb.weight"] == (40, 768)
    assert shapes["alphas_cumprod"] == (1000,)


def test_lightning_file_is_refused_by_weights_only_load(saved):
    # the diffusers from_single_file pitfall: Lightning pickles hyper-parameters
    with pytest.raises(pickle.UnpicklingError):
        torch.load(saved[2], weights_only=True)


def test_round_trip_is_exact(saved):
    model, sd, path = saved
    loaded = load_ldm(path, LDM_SMALL)
    assert not loaded.training
    assert {t.device.type for t in loaded.state_dict().values()} == {"cpu"}  # built on meta, all weights assigned
    assert loaded.key_report.counts() == {"used": len(sd), "missing": 0, "unexpected": 0, "mismatched": 0,
                                          "ignored": 0}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    back = ldm_state_dict(loaded)
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_loaded_model_computes_what_the_source_computes(saved):
    model, _, path = saved
    loaded = load_ldm(path, LDM_SMALL)
    feats = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1)
    z = torch.randn(2, 4, 8, 16)
    with torch.no_grad():
        eps = loaded.unet(z, torch.tensor([3, 700]), encoder_hidden_states=loaded.context(feats)).sample
        ref = model.unet(z, torch.tensor([3, 700]), encoder_hidden_states=model.context(feats)).sample
    torch.testing.assert_close(eps, ref, rtol=0, atol=0)
    mel = torch.rand(2, 16, 32)
    torch.testing.assert_close(loaded.encode_mel(mel, sample=False), model.encode_mel(mel, sample=False))


def test_mel_is_repeated_to_three_channels_and_channel_0_decoded():
    ldm = small_ldm()
    mel = torch.rand(16, 32)
    with torch.no_grad():
        dist = ldm.vae.encode(mel[None, None].expand(1, 3, 16, 32)).latent_dist
        z = ldm.encode_mel(mel, sample=False)
        torch.testing.assert_close(z, dist.mode() * 0.18215)
        assert z.shape == (1, 4, 8, 16)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        torch.testing.assert_close(ldm.encode_mel(mel, generator=g1), dist.sample(g2) * 0.18215)
        decoded = ldm.decode_latent(z)
        torch.testing.assert_close(decoded, ldm.vae.decode(z / 0.18215).sample[:, 0])
    assert decoded.shape == (1, 16, 32)


def test_unconditional_context_released_and_training_variants():
    ldm = small_ldm()
    feats = torch.randn(3, 5, 8)
    with torch.no_grad():
        cond = ldm.context(feats)
        torch.testing.assert_close(cond, ldm.cond.embedder(feats) + ldm.cond.pos_emb.weight[:5])
        released = ldm.context(feats, uncond=True)
        assert released.shape == (3, 5, 16) and not released.any()
        ldm.uncond_zeros = "before_embedder"
        training = ldm.context(feats, uncond=True)
    torch.testing.assert_close(training, (ldm.cond.embedder[0].bias + ldm.cond.pos_emb.weight[:5]).expand(3, 5, 16))
    with pytest.raises(ValueError, match="uncond_zeros"):
        build_ldm(LDM_SMALL, uncond_zeros="zeros")


def test_schedule_is_scaled_linear_eps_and_matches_diffusers():
    buffers = schedule_buffers()
    sched = DDPMScheduler(**NOISE_SCHEDULE)
    assert sched.config.prediction_type == "epsilon"
    torch.testing.assert_close(buffers["betas"], sched.betas, rtol=1e-5, atol=0)
    torch.testing.assert_close(buffers["alphas_cumprod"], sched.alphas_cumprod, rtol=1e-5, atol=0)
    assert buffers["betas"][0].item() == pytest.approx(0.00085) and buffers["betas"][-1].item() == pytest.approx(0.012)
    assert len(buffers) == 12


@pytest.mark.parametrize(("edit", "error", "message"), [
    ("drop", KeyMismatchError, r"1 missing keys: model\.diffusion_model\.input_blocks\.1\.0\.in_layers\.2\.weight"),
    ("rename", KeyMismatchError,
     r"missing keys: first_stage_model\.encoder\.mid\.attn_1\.q\.weight.*unexpected keys: "
     r"first_stage_model\.encoder\.mid\.attn_1\.query\.weight"),
    ("reshape", KeyMismatchError,
     r"mis-shaped tensors: model\.diffusion_model\.input_blocks\.1\.1\.proj_in\.weight: file \[32, 16, 1, 1\]"),
    ("extra", KeyMismatchError, r"1 unexpected keys: model_ema\.decay"),
    ("cond", KeyMismatchError,
     r"mis-shaped tensors: cond_stage_model\.pos_emb\.weight: file \[30, 16\] vs model \[40, 16\]"),
    ("betas", CheckpointError, r"buffer 'betas' does not match the schedule"),
])
def test_broken_checkpoints_fail_naming_file_and_keys(tmp_path, saved, edit, error, message):
    sd = dict(saved[1])
    if edit == "drop":
        del sd["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"]
    elif edit == "rename":
        attn = "first_stage_model.encoder.mid.attn_1."
        sd[attn + "query.weight"] = sd.pop(attn + "q.weight")
    elif edit == "reshape":
        key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
        sd[key] = sd[key][:, :16]
    elif edit == "extra":
        sd["model_ema.decay"] = torch.tensor(0.9999)
    elif edit == "cond":
        sd["cond_stage_model.pos_emb.weight"] = sd["cond_stage_model.pos_emb.weight"][:30]
    else:
        sd["betas"] = schedule_buffers(linear_start=0.0001, linear_end=0.02)["betas"]
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(error, match=message) as err:
        load_ldm(path, LDM_SMALL)
    assert str(err.value).startswith(str(path))


def test_missing_schedule_buffers_are_allowed_and_extra_files_named(tmp_path, saved):
    sd = {k: v for k, v in saved[1].items() if k not in schedule_buffers()}
    assert load_ldm(sd, LDM_SMALL).key_report.used == len(sd)
    with pytest.raises(CheckpointError, match="nowhere.ckpt: file not found"):
        load_ldm(tmp_path / "nowhere.ckpt", LDM_SMALL)


def test_features_are_cut_into_32_frame_windows_dropping_the_rest():
    feats = torch.arange(70 * 2, dtype=torch.float32).reshape(70, 2)
    windows = feature_windows(feats)
    assert windows.shape == (2, 32, 2)
    torch.testing.assert_close(windows[1, 0], feats[32])
    with pytest.raises(ValueError, match="fewer than one 32-frame window"):
        feature_windows(feats[:31])
