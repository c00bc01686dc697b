"""Diff-Foley's Align-Acc classifier: eval_classifier.ckpt-format files, t = 0, P(aligned)."""

import math

import pytest
import torch
from diff_foley_files import CLASSIFIER_SMALL, save_lightning_file, small_classifier

from cinefoley.models.align_classifier import AlignmentClassifier, align_classifier_state_dict, load_align_classifier
from cinefoley.models.checkpoints import KeyMismatchError
from cinefoley.errors import CheckpointError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = small_classifier(seed=7)
    path = tmp_path_factory.mktemp("clf") / "eval_classifier.ckpt"
    sd = align_classifier_state_dict(model)
    save_lightning_file(sd, path, epoch=12)
    return model, sd, path


def test_full_size_layout_is_diff_foley_classifier_backbone():
    with torch.device("meta"):
        sd = align_classifier_state_dict(AlignmentClassifier())
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # input blocks: 0 conv, 1 res (128), 2 down, 3 res+attn (256), 4 down, 5 res+attn (256); no output blocks
    assert shapes["model.time_embed.0.weight"] == (512, 128)
    assert shapes["model.input_blocks.0.0.weight"] == (128, 4, 3, 3)
    assert shapes["model.input_blocks.2.0.op.weight"] == (128, 128, 3, 3)
    assert shapes["model.input_blocks.3.0.skip_connection.weight"] == (256, 128, 1, 1)
    assert shapes["model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"] == (256, 512)
    assert shapes["model.input_blocks.5.1.proj_in.weight"] == (256, 256, 1, 1)
    assert shapes["model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"] == (2048, 256)
    assert shapes["model.out.0.weight"] == (256,)
    assert shapes["model.out.2.weight"] == (128, 256, 3, 3)
    assert shapes["model.classifier.weight"] == (1, 128)
    assert shapes["cond_model.pos_emb.weight"] == (40, 512)
    assert shapes["first_stage_model.encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert not any(".input_blocks.1.1." in k or "output_blocks" in k or "input_blocks.6" in k for k in sd)
    assert shapes["scale_factor"] == () and shapes["betas"] == (1000,)


def test_timestep_embedding_is_openai_cos_sin():
    backbone = small_classifier().backbone
    t = torch.tensor([0, 17, 999])
    half = 16
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(backbone.time_proj(t), expected)


def test_round_trip_and_probabilities(saved):
    model, sd, path = saved
    loaded = load_align_classifier(path, CLASSIFIER_SMALL)
    assert loaded.key_report.used == len(sd) and loaded.key_report.ok
    assert {t.device.type for t in loaded.state_dict().values()} == {"cpu"}
    assert sd["scale_factor"].item() == pytest.approx(0.18215)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    back = align_classifier_state_dict(loaded)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    mel, feats = torch.rand(3, 16, 32), torch.randn(3, 6, 8)
    p = loaded.align_prob(mel, feats, sample=False)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    torch.testing.assert_close(p, model.align_prob(mel, feats, sample=False), rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(loaded.align_prob(mel, feats, generator=g1), model.align_prob(mel, feats, generator=g2))
    assert loaded.align_prob(mel[0], feats[0], sample=False).shape == ()


def test_align_prob_is_backbone_at_t0_on_scaled_latent_and_embedded_features():
    model = small_classifier()
    mel, feats = torch.rand(2, 16, 32), torch.randn(2, 5, 8)
    with torch.no_grad():
        z = model.vae.encode(mel[:, None].repeat(1, 3, 1, 1)).latent_dist.mode() * 0.18215
        context = model.cond(feats)
        expected = model.backbone(z, torch.zeros(2, dtype=torch.long), context)[:, 0]
        later = model.backbone(z, torch.full((2,), 500), context)[:, 0]
    torch.testing.assert_close(model.align_prob(mel, feats, sample=False), expected)
    assert not torch.allclose(later, expected)
    assert not torch.allclose(model.align_prob(mel, feats.flip(1), sample=False), expected)


@pytest.mark.parametrize(("edit", "error", "message"), [
    ("drop", KeyMismatchError, r"1 missing keys: model\.classifier\.weight"),
    ("rename", KeyMismatchError, r"missing keys: model\.out\.2\.weight.*unexpected keys: model\.out\.3\.weight"),
    ("reshape", KeyMismatchError,
     r"mis-shaped tensors: model\.input_blocks\.3\.1\.transformer_blocks\.0\.attn2\.to_k\.weight"),
    ("vae", KeyMismatchError,
     r"the VAE \(first_stage_model\.\*\).*1 missing keys: first_stage_model\.decoder\.conv_out\.bias"),
    ("scale", CheckpointError, r"buffer 'scale_factor' does not match"),
])
def test_broken_checkpoints_fail_naming_file_and_keys(tmp_path, saved, edit, error, message):
    sd = dict(saved[1])
    if edit == "drop":
        del sd["model.classifier.weight"]
    elif edit == "rename":
        sd["model.out.3.weight"] = sd.pop("model.out.2.weight")
    elif edit == "reshape":
        key = "model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"
        sd[key] = sd[key][:, :8]
    elif edit == "vae":
        del sd["first_stage_model.decoder.conv_out.bias"]
    else:
        sd["scale_factor"] = torch.tensor(1.0)
    path = tmp_path / "broken_classifier.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(error, match=message) as err:
        load_align_classifier(path, CLASSIFIER_SMALL)
    assert str(err.value).startswith(str(path))
