"""The toy latent diffusion generator (cinefoley.models.cinetoy.generator)."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from synthetic_av import make_clips

from cinefoley.generate import sample_latents
from cinefoley.models.cinetoy.generator import (FrameLocalCrossAttnProcessor, GeneratorTrainConfig, ToyLDM,
                                                ToyLDMConfig, diffusion_loss, train_generator)
from cinefoley.models.model_io import load_model, save_model

TINY = ToyLDMConfig(patch=16, latent_channels=8, block_out_channels=(32, 32), attention_heads=2, norm_num_groups=8)


@pytest.fixture(scope="module")
def clips():
    return make_clips(16, seed=4, size=32)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return ToyLDM(TINY)


@pytest.mark.parametrize("patch, channels, geometry", [(8, 16, (16, 2)), (16, 8, (8, 1)), ((64, 4), 8, (2, 4))])
def test_latent_is_the_fitted_first_stage(clips, patch, channels, geometry):
    model = ToyLDM(ToyLDMConfig(patch=patch, latent_channels=channels, block_out_channels=(16, 16),
                                attention_heads=2, norm_num_groups=8))
    model.first_stage.fit(clips.mels)
    z = model.encode_mel(clips.mels)
    shape = (channels, geometry[0], 128 // (16 // geometry[1]))
    assert model.latent_shape == shape and z.shape == (16, *shape) and model.unet.config.in_channels == channels
    assert model.latent_geometry == geometry           # (latent rows, latent columns per video frame)
    assert (z.std() - 1).abs() < 1e-3
    assert torch.equal(model.decode_latent(z), model.first_stage.decode(z))


def test_frame_bias_lands_on_the_frame_under_each_latent_column():
    """A 2 x 32 latent of 8 frames: at every level of the UNet, column c of w lies under frame c * 8 // w."""
    proc = FrameLocalCrossAttnProcessor(latent_height=2, columns_per_frame=4, frame_bias=3.0)
    like = torch.zeros(1)
    for h, w in ((2, 32), (1, 16), (1, 8), (1, 4)):
        bias = proc.bias(h * w, 8, like)
        assert bias.shape == (h * w, 8) and set(bias.unique().tolist()) == {0.0, 3.0}
        assert (bias.sum(1) == 3.0).all()                                       # one frame per query
        for q in range(h * w):
            assert bias[q].argmax().item() == (q % w) * 8 // w                  # row-major: column = q mod w
    with pytest.raises(ValueError, match="fit no level"):
        proc.bias(63, 8, like)


def test_cross_attention_is_frame_local_and_self_attention_is_not():
    model = ToyLDM(ToyLDMConfig(block_out_channels=(16, 16), attention_heads=2, norm_num_groups=8)).eval()
    kinds = {name: type(p).__name__ for name, p in model.unet.attn_processors.items()}
    assert {k for n, k in kinds.items() if ".attn2." in n} == {"FrameLocalCrossAttnProcessor"}
    assert {k for n, k in kinds.items() if ".attn1." in n} == {"AttnProcessor2_0"}
    plain = ToyLDM(ToyLDMConfig(block_out_channels=(16, 16), attention_heads=2, norm_num_groups=8, frame_bias=0))
    assert {type(p).__name__ for p in plain.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_a_frames_features_move_mostly_the_columns_under_it():
    """Changing frame 5's features changes the predicted noise under frame 5 more than elsewhere (bias 8),
    and not so with plain cross-attention: the time prior the frame bias gives."""
    def spread(frame_bias):
        torch.manual_seed(0)
        model = ToyLDM(ToyLDMConfig(block_out_channels=(16, 16), attention_heads=2, norm_num_groups=8,
                                    frame_bias=frame_bias)).eval()
        z, t = torch.randn(1, *model.latent_shape), torch.tensor([500])
        feats = torch.randn(1, 8, 512)
        moved = feats.clone()
        moved[0, 5] = torch.randn(512)
        with torch.no_grad():
            change = (model(z, t, model.context(moved)) - model(z, t, model.context(feats))).abs().mean(dim=(0, 1, 2))
        per_frame = change.reshape(8, 4).mean(1)                               # 4 latent columns per frame
        return per_frame[5] / per_frame[[0, 1, 2]].mean()
    assert spread(8.0) > 3 * spread(0.0) and spread(8.0) > 2


def test_features_are_standardised_before_the_embedder():
    model = _tiny()
    feats = 0.3 + 0.01 * torch.randn(20, 8, 512)
    model.fit_feature_scale(feats)
    # centred per dimension, one scale for all dimensions: the geometry of the features is kept
    expected = model.cond((feats - feats.mean(dim=(0, 1))) / feats.var(dim=(0, 1)).mean().sqrt())
    assert torch.allclose(model.context(feats), expected, atol=1e-5)


def test_unconditional_context_is_zero_after_the_embedder(clips):
    model = _tiny()
    feats = F.normalize(torch.randn(3, 8, 512), dim=-1)
    cond = model.context(feats)
    expected = model.cond.embedder(feats) + model.cond.pos_emb.weight[:8]
    assert torch.allclose(cond, expected, atol=1e-6)
    assert torch.equal(model.context(feats, uncond=True), torch.zeros(3, 8, 32))


def test_noise_schedule_is_diff_foleys_ldm_schedule():
    model = _tiny()
    betas = DDPMScheduler(**model.noise_schedule).betas
    assert len(betas) == 1000
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    assert torch.allclose(betas.sqrt(), torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000))
    dpm = DPMSolverMultistepScheduler(**model.noise_schedule, algorithm_type="dpmsolver++")
    assert dpm.config.prediction_type == "epsilon"


def test_diffusion_loss_is_eq3(clips):
    model = _tiny().eval()
    model.first_stage.fit(clips.mels)
    sched = DDPMScheduler(**model.noise_schedule)
    z0, ctx = model.encode_mel(clips.mels[:4]), model.context(torch.randn(4, 8, 512))
    with torch.no_grad():
        loss = diffusion_loss(model, z0, ctx, sched, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(1000, (4,), generator=g)
        a = sched.alphas_cumprod[t].view(4, 1, 1, 1)
        eps = model.unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=ctx).sample
    assert loss.item() == pytest.approx(F.mse_loss(eps, noise).item(), rel=1e-5)


def test_condition_dropout_acts_after_the_embedder(clips):
    feats = torch.randn(16, 8, 512)
    for p, moves in ((1.0, False), (0.0, True)):
        model = _tiny()
        before = model.cond.embedder[0].weight.clone()
        train_generator(model, feats, clips.mels, GeneratorTrainConfig(
            steps=2, batch_size=4, weight_decay=0.0, cond_drop_prob=p), progress=False)
        assert torch.equal(model.cond.embedder[0].weight, before) != moves


def test_training_reduces_the_loss_and_is_seeded(clips):
    feats = torch.randn(16, 8, 512)
    model = _tiny()
    model.first_stage.fit(clips.mels)
    model.fit_feature_scale(feats)
    sched = DDPMScheduler(**model.noise_schedule)

    def held_loss():
        with torch.no_grad():
            return diffusion_loss(model.eval(), model.encode_mel(clips.mels), model.context(feats), sched,
                                  torch.Generator().manual_seed(0)).item()

    start = held_loss()
    cfg = GeneratorTrainConfig(steps=30, batch_size=8, lr=2e-3, warmup_steps=1)
    history = train_generator(model, feats, clips.mels, cfg, progress=False)
    assert len(history["loss"]) == 30 and not model.training
    assert held_loss() < 0.8 * start
    again = _tiny()
    train_generator(again, feats, clips.mels, cfg, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_save_load_round_trip(tmp_path, clips):
    model = _tiny().eval()
    model.first_stage.fit(clips.mels)
    model.fit_feature_scale(torch.randn(4, 8, 512))
    loaded = load_model(save_model(model, tmp_path / "ldm.pt", half=False))
    z, t, ctx = torch.randn(2, *model.latent_shape), torch.tensor([10, 500]), model.context(torch.randn(2, 8, 512))
    with torch.no_grad():
        assert torch.equal(loaded(z, t, ctx), model(z, t, ctx))
    assert torch.equal(loaded.decode_latent(z), model.decode_latent(z))
    assert loaded.noise_schedule == model.noise_schedule and loaded.vae is None


@pytest.mark.slow
def test_generated_mel_is_closest_to_its_class():
    """After a short training, guided samples of held-out clips sound like their class (nearest class-mean mel)."""
    data = make_clips(160, num_classes=4, seed=6, size=32)
    # stand-in features: the class and the event frames, seen through a fixed random projection
    g = torch.Generator().manual_seed(0)
    code = torch.zeros(160, 8, 8)
    code[torch.arange(160), :, data.labels] = 1.0
    code[..., 4:][data.event_frames] = 1.0
    feats = F.normalize(code @ torch.randn(8, 512, generator=g), dim=-1)
    torch.manual_seed(0)
    model = ToyLDM(ToyLDMConfig(patch=16, latent_channels=8, block_out_channels=(32, 32), attention_heads=4,
                                norm_num_groups=8))
    train_generator(model, feats[:128], data.mels[:128], GeneratorTrainConfig(steps=800, batch_size=16, lr=3e-3),
                    progress=False)
    test = slice(128, 160)
    with torch.no_grad():  # the package's own sampler: DPM-Solver++, classifier-free guidance 4.5
        lat = sample_latents(model, feats[test], torch.randn(32, *model.latent_shape, generator=g), guidance=4.5,
                             steps=20)
        mel = model.decode_latent(lat)
    means = torch.stack([data.mels[:128][data.labels[:128] == c].mean(0) for c in range(4)])
    nearest = ((mel[:, None] - means[None]) ** 2).mean(dim=(2, 3)).argmin(1)
    assert (nearest == data.labels[test]).float().mean() >= 0.75
