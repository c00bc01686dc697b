"""The evaluation networks standing in for PANNs, VGGish and Diff-Foley's alignment classifier."""

import pytest
import torch
from synthetic_av import make_clips

from cinefoley.models.cinetoy.referees import (AlignmentClassifier, AudioClassifier, EvaluatorTrainConfig,
                                  FrameEmbedder, alignment_accuracy, alignment_pairs,
                                  classification_accuracy, train_alignment_classifier,
                                  train_audio_classifier, train_frame_embedder)
from cinefoley.models.model_io import load_model, save_model


@pytest.fixture(scope="module")
def clips():
    return make_clips(96, num_classes=4, seed=7, size=32)


@pytest.fixture(scope="module")
def feats(clips):
    """Per-frame stand-in video features: class one-hot plus an event flag, projected to 512."""
    code = torch.zeros(len(clips.labels), 8, 5)
    code[torch.arange(len(clips.labels)), :, clips.labels] = 1.0
    code[..., 4] = clips.event_frames.float() * 2
    return torch.nn.functional.normalize(code @ torch.randn(5, 512, generator=torch.Generator().manual_seed(0)), dim=-1)


def test_audio_classifier_embedding_is_post_relu():
    torch.manual_seed(0)
    model = AudioClassifier().eval()
    mel = torch.rand(3, 128, 128)
    emb = model.embed(mel)
    assert emb.shape == (3, 256) and (emb >= 0).all()
    assert torch.allclose(model(mel), model.fc(emb))


def test_frame_embedder_frames_are_0_96_s():
    torch.manual_seed(0)
    model = FrameEmbedder().eval()
    assert model.config.frame_len == 60                  # 0.96 s / (256 / 16000 s)
    mel = torch.rand(2, 128, 512)
    frames = model.frames(mel)
    assert frames.shape == (2, 8, 128, 60)               # 8.192 s -> 8 frames, 32 mel frames dropped
    assert torch.equal(frames[1, 3], mel[1, :, 180:240])
    assert model.embed(mel[..., :128]).shape == (2, 2, 128)
    assert (model.embed(mel) < 0).any()                  # pre-activation, like VGGish without its ReLU
    with pytest.raises(ValueError, match=">= 60 frames"):
        model.embed(mel[..., :59])


def test_alignment_classifier_checks_lengths():
    model = AlignmentClassifier()
    assert model(torch.rand(2, 128, 128), torch.randn(2, 8, 512)).shape == (2,)
    with pytest.raises(ValueError, match="does not match"):
        model(torch.rand(2, 128, 128), torch.randn(2, 7, 512))


def test_alignment_pairs_are_aligned_shifted_or_mismatched(clips):
    idx = torch.arange(96)
    feats = torch.randn(96, 8, 512, generator=torch.Generator().manual_seed(0))
    mel, feat, label = alignment_pairs(clips.mels, feats, idx, 2, torch.Generator().manual_seed(1))
    assert torch.equal(mel, clips.mels)
    same = (feat == feats).all(dim=(1, 2))
    assert torch.equal(same, label.bool())
    for i in torch.nonzero(~same).flatten().tolist():
        rolls = [s for s in range(2, 7) if torch.equal(feat[i], feats[i].roll(s, dims=0))]
        others = [j for j in range(96) if j != i and torch.equal(feat[i], feats[j])]
        assert len(rolls) + len(others) == 1
    assert 0.35 < label.mean() < 0.65
    with pytest.raises(ValueError, match="leaves no shift"):
        alignment_pairs(clips.mels, feats, idx, 5, torch.Generator())


def test_classifiers_learn_and_save(tmp_path, clips):
    cfg = EvaluatorTrainConfig(epochs=4, batch_size=16)
    train, test = slice(0, 64), slice(64, 96)
    clf, history = train_audio_classifier(clips.mels[train], clips.labels[train], cfg, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert classification_accuracy(clf, clips.mels[test], clips.labels[test]) >= 0.75
    frames, history = train_frame_embedder(clips.mels[train], clips.labels[train], cfg, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert classification_accuracy(frames, clips.mels[test], clips.labels[test]) >= 0.5
    for model in (clf, frames):
        loaded = load_model(save_model(model, tmp_path / "m.pt", half=False))
        with torch.no_grad():
            assert torch.equal(loaded(clips.mels[test]), model(clips.mels[test]))


def test_alignment_classifier_learns(clips, feats):
    cfg = EvaluatorTrainConfig(epochs=10, batch_size=16, lr=3e-3)
    model, history = train_alignment_classifier(clips.mels[:64], feats[:64], cfg, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert alignment_accuracy(model, clips.mels[64:], feats[64:]) > 0.6


def test_training_is_seeded(clips, feats):
    runs = [train_alignment_classifier(clips.mels[:32], feats[:32], EvaluatorTrainConfig(epochs=1, batch_size=16, seed=s),
                                       progress=False)[0].state_dict() for s in (0, 0, 1)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["out.weight"], runs[2]["out.weight"])
