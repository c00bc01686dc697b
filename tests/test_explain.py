"""Grad-CAM of the video encoders and the attention-on-object score."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cinefoley.models.cinetoy.encoders import ToyVideoEncoder, ToyVideoEncoderConfig
from cinefoley.explain import (FrameSimilarityTarget, attention_on_object, box_in_view, grad_cam, mass_in_box)


class LeftHalfEncoder(nn.Module):
    """Sees only the left half of every frame: its maps must put (nearly) all mass there."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.head = nn.Linear(8, 16)

    @property
    def cam_layer(self):
        return self.conv

    @staticmethod
    def cam_reshape(t):
        return lambda a: a.reshape(-1, t, *a.shape[1:]).permute(0, 2, 1, 3, 4)

    def forward(self, video):
        b, t, c, h, w = video.shape
        x = video.float().flatten(0, 1).clone()
        x[..., w // 2:] = 0
        a = F.relu(self.conv(x))
        return F.normalize(self.head(a.mean((2, 3))).reshape(b, t, -1), dim=-1)


def small_encoder():
    torch.manual_seed(0)
    return ToyVideoEncoder(ToyVideoEncoderConfig(input_size=32, widths=(8, 8, 16, 16), embed_dim=32))


def test_maps_follow_what_the_encoder_sees():
    enc = LeftHalfEncoder()
    videos = torch.rand(2, 4, 3, 16, 16)
    refs = torch.randn(2, 4, 16)
    maps = grad_cam(enc, videos, refs)
    assert maps.shape == (2, 4, 16, 16)
    left = maps[..., :8].sum() / maps.sum()
    assert left > 0.95


def test_frozen_teacher_under_no_grad_in_eval_mode_works_and_mode_is_restored():
    enc = small_encoder().requires_grad_(False)
    enc.train()
    videos = torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)
    refs = torch.randn(2, 4, 32)
    with torch.no_grad():
        maps = grad_cam(enc, videos, refs)
    assert maps.shape == (2, 4, 32, 32) and np.isfinite(maps).all() and maps.max() > 0
    assert enc.training, "BaseCAM switches to eval(); grad_cam must restore the mode"
    assert all(not p.requires_grad for p in enc.parameters())


def test_errors_inside_the_cam_are_not_swallowed():
    class Broken(FrameSimilarityTarget):
        def __call__(self, output):
            raise IndexError("boom")

    enc = small_encoder()
    import cinefoley.explain as ex
    original = ex.FrameSimilarityTarget
    ex.FrameSimilarityTarget = Broken
    try:
        with pytest.raises(IndexError):
            grad_cam(enc, torch.rand(1, 4, 3, 32, 32), torch.randn(1, 4, 32))
    finally:
        ex.FrameSimilarityTarget = original


def test_box_in_view_maps_a_box_into_a_resized_window():
    # window (10, 20, 20, 40) resized to 40x80: scale 2 in both axes
    assert box_in_view((15, 30, 10, 10), (10, 20, 20, 40), (40, 80)) == (10.0, 20.0, 20.0, 20.0)
    assert box_in_view((0, 0, 5, 5), (10, 20, 20, 40), (40, 80)) is None
    # a box sticking out of the window is cut at the window's edge
    assert box_in_view((25, 50, 20, 20), (10, 20, 20, 40), (40, 80)) == (30.0, 60.0, 10.0, 20.0)


def test_mass_in_box_and_chance_level():
    cam = np.zeros((10, 10))
    cam[2:4, 3:7] = 1.0
    assert mass_in_box(cam, (2, 3, 2, 4)) == pytest.approx(1.0)
    assert mass_in_box(cam, (2, 3, 1, 4)) == pytest.approx(0.5)
    assert mass_in_box(np.ones((10, 10)), (0, 0, 2.5, 10)) == pytest.approx(0.25)
    uniform = np.ones((3, 10, 10))
    share, chance = attention_on_object(uniform, [(0, 0, 5, 5)] * 3, frame_size=(10, 10))
    assert share == pytest.approx(chance) == pytest.approx(0.25)
    # object out of view in every window -> no score
    assert np.isnan(attention_on_object(uniform, [(0, 0, 2, 2)] * 3, windows=[(5, 5, 5, 5)] * 3)[0])
