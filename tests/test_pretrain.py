"""CAVP-style pretraining of the toy teacher (cinefoley.models.cinetoy.pretrain), checked against its definitions."""

import math

import pytest
import torch
import torch.nn.functional as F
from synthetic_av import make_clips

from cinefoley.models.cinetoy.encoders import ToyAudioEncoderConfig, ToyVideoEncoderConfig
from cinefoley.models.cinetoy.pretrain import (PretrainConfig, pretrain, semantic_contrast, temporal_contrast,
                                window_embeddings, window_starts)

TINY = dict(batch_size=8, video=ToyVideoEncoderConfig(input_size=32, widths=(8, 16, 16, 16)),
            audio=ToyAudioEncoderConfig(widths=(8, 8, 16, 16)))


def _symmetric_ce_by_hand(logits: torch.Tensor) -> float:
    """Mean over rows of -log softmax(row)[i] and over columns likewise, halved."""
    n = logits.shape[0]
    rows = [-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(n)]
    cols = [-(logits[i, i] - torch.logsumexp(logits[:, i], 0)) for i in range(n)]
    return float((sum(rows) / n + sum(cols) / n) / 2)


def test_window_starts_respect_the_minimum_offset():
    assert window_starts(8, 4, 3, 2).tolist() == [[0, 2, 4]]
    pairs = window_starts(8, 4, 2, 2).tolist()
    assert pairs == [[0, 2], [0, 3], [0, 4], [1, 3], [1, 4], [2, 4]]
    with pytest.raises(ValueError, match="no 3 windows"):
        window_starts(8, 4, 3, 3)


def test_window_embeddings_max_pool_then_normalise():
    emb = torch.randn(2, 8, 5)
    starts = torch.tensor([[0, 3], [4, 1]])
    out = window_embeddings(emb, starts, window=4)
    expected = F.normalize(emb[1, 1:5].amax(0), dim=0)
    assert out.shape == (2, 2, 5)
    assert torch.allclose(out[1, 1], expected)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 2))


def test_semantic_contrast_is_symmetric_clip_cross_entropy():
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    a = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    scale = torch.tensor(math.log(10.0))
    assert semantic_contrast(v, a, scale).item() == pytest.approx(_symmetric_ce_by_hand(10 * v @ a.T), rel=1e-5)


def test_temporal_contrast_only_compares_windows_of_the_same_clip():
    g = torch.Generator().manual_seed(2)
    v = F.normalize(torch.randn(2, 3, 4, generator=g), dim=-1)
    a = F.normalize(torch.randn(2, 3, 4, generator=g), dim=-1)
    scale = torch.tensor(math.log(7.0))
    by_hand = sum(_symmetric_ce_by_hand(7 * v[b] @ a[b].T) for b in range(2)) / 2
    assert temporal_contrast(v, a, scale).item() == pytest.approx(by_hand, rel=1e-5)
    a_other = a.clone()
    a_other[1] = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    changed = temporal_contrast(v, a_other, scale).item() - temporal_contrast(v, a, scale).item()
    assert changed == pytest.approx((_symmetric_ce_by_hand(7 * v[1] @ a_other[1].T)
                                     - _symmetric_ce_by_hand(7 * v[1] @ a[1].T)) / 2, rel=1e-4)


@pytest.fixture(scope="module")
def clips():
    return make_clips(24, seed=3, size=32)


def test_training_reduces_the_loss_and_clamps_the_logit_scale(clips):
    cfg = PretrainConfig(epochs=4, lr=3e-3, warmup_steps=1, max_logit_scale=math.log(12.0), **TINY)
    video, audio, history = pretrain(clips.videos, clips.mels, cfg, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["semantic"]) == 4
    assert max(history["logit_scale"]) <= 12.0 + 1e-4      # init 1/0.07 = 14.3 is clamped
    assert not video.training and not audio.training
    assert video(clips.videos[:2]).shape == (2, 8, 512)


def test_same_seed_same_weights(clips):
    cfg = PretrainConfig(epochs=1, **TINY)
    first = pretrain(clips.videos, clips.mels, cfg, progress=False)[0].state_dict()
    second = pretrain(clips.videos, clips.mels, cfg, progress=False)[0].state_dict()
    other = pretrain(clips.videos, clips.mels, PretrainConfig(epochs=1, seed=1, **TINY), progress=False)[0]
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["head.weight"], other.state_dict()["head.weight"])


def test_mismatched_inputs_are_refused(clips):
    with pytest.raises(ValueError, match="videos but"):
        pretrain(clips.videos[:3], clips.mels[:2], PretrainConfig(**TINY), progress=False)
    with pytest.raises(ValueError, match="mels have 64 frames"):
        pretrain(clips.videos, clips.mels[..., :64], PretrainConfig(**TINY), progress=False)
