"""The evaluation networks standing in for PANNs, VGGish and Diff-Foley's alignment classifier."""

import numpy as np
import pytest
import torch
from synthetic_av import make_clips

from cinefoley.media.audio import shift_mels
from cinefoley.models.cinetoy.referees import (AlignmentClassifier, AudioClassifier, EvaluatorTrainConfig,
                                               FrameEmbedder, alignment_pairs, classification_accuracy,
                                               train_alignment_classifier, train_audio_classifier, train_frame_embedder)
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


def test_shift_mels_moves_the_sound_and_fills_with_room_tone():
    mel = torch.rand(2, 4, 10) + 0.5
    mel[:, 0, 0] = 0.1                                    # each mel's quietest bin
    out = shift_mels(mel, torch.tensor([3, -2]))
    assert torch.equal(out[0, :, 3:], mel[0, :, :7]) and (out[0, :, :3] == 0.1).all()      # delayed by 3
    assert torch.equal(out[1, :, :8], mel[1, :, 2:]) and (out[1, :, 8:] == 0.1).all()      # advanced by 2
    assert torch.equal(shift_mels(mel, torch.tensor([0, 0])), mel)


def test_alignment_pairs_are_aligned_or_one_kind_of_wrong(clips):
    """Noise off: every pair is the clip itself (label 1) or exactly one of the wrong kinds (label 0)."""
    n = 96
    idx = torch.arange(n)
    feats = torch.randn(n, 8, 512, generator=torch.Generator().manual_seed(0))
    wrong_class = torch.rand(clips.mels.shape, generator=torch.Generator().manual_seed(2))
    cfg = EvaluatorTrainConfig(mel_noise=0, feature_noise=0)
    kinds = {"aligned": 0, "rolled": 0, "moved": 0, "other clip": 0, "other class": 0}
    for seed in range(3):
        mel, feat, label = alignment_pairs(clips.mels, feats, idx, cfg, torch.Generator().manual_seed(seed), wrong_class)
        for i in range(n):
            own_feat, own_mel = torch.equal(feat[i], feats[i]), torch.equal(mel[i], clips.mels[i])
            found = {"aligned": own_feat and own_mel,
                     "rolled": own_mel and any(torch.equal(feat[i], feats[i].roll(s, 0)) for s in range(2, 7)),
                     "moved": own_feat and any(torch.equal(mel[i], shift_mels(clips.mels[i:i + 1], torch.tensor([s]))[0])
                                               for s in [*range(8, 49), *range(-48, -7)]),
                     "other clip": own_mel and any(torch.equal(feat[i], feats[j]) for j in range(n) if j != i),
                     "other class": own_feat and torch.equal(mel[i], wrong_class[i])}
            assert sum(found.values()) == 1, (i, found)
            kind = next(k for k, v in found.items() if v)
            assert label[i] == (kind == "aligned")
            kinds[kind] += 1
    assert 0.4 < kinds["aligned"] / (3 * n) < 0.6 and min(kinds.values()) >= 15   # half aligned, every kind drawn
    _, _, label = alignment_pairs(clips.mels, feats, idx, cfg, torch.Generator().manual_seed(0))
    assert 0.35 < label.mean() < 0.65                                               # without other-class mels
    with pytest.raises(ValueError, match="leaves no shift"):
        alignment_pairs(clips.mels, feats, idx, EvaluatorTrainConfig(min_shift=5), torch.Generator())


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
    held_out = clips.mels[64:], feats[64:]
    with torch.no_grad():
        aligned = (model(*held_out) > 0).float().mean()
        rolled = (model(held_out[0], held_out[1].roll(4, dims=1)) < 0).float().mean()
        other = (model(held_out[0], held_out[1].roll(1, dims=0)) < 0).float().mean()
    assert (aligned + rolled + other) / 3 > 0.6, (aligned, rolled, other)


def test_training_is_seeded(clips, feats):
    runs = [train_alignment_classifier(clips.mels[:32], feats[:32], EvaluatorTrainConfig(epochs=1, batch_size=16, seed=s),
                                       progress=False)[0].state_dict() for s in (0, 0, 1)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["out.weight"], runs[2]["out.weight"])


def test_alignment_checks_call_a_pair_aligned_as_align_acc_does():
    """p = 0.5 is not aligned (Diff-Foley's round(p) == 1); the aligned row counts calls, the others refusals."""
    from cinefoley.metrics.referees import ALIGNMENT_CHECKS, Referees, alignment_checks

    mels, feats = np.random.rand(4, 128, 128).astype(np.float32), torch.randn(4, 8, 512)
    table = alignment_checks(Referees(None, lambda m, f: np.full(len(m), 0.5)), mels, feats)
    assert table.check.tolist() == [name for name, _ in ALIGNMENT_CHECKS]
    assert table.accuracy.tolist() == [0.0] + [1.0] * (len(ALIGNMENT_CHECKS) - 1) and (table.n == 4).all()
    table = alignment_checks(Referees(None, lambda m, f: np.full(len(m), 0.51)), mels, feats)
    assert table.accuracy.tolist() == [1.0] + [0.0] * (len(ALIGNMENT_CHECKS) - 1)
