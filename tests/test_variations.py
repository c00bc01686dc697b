"""Cinematic language variations (paper §3.2): f_cu, f_cm, f_cu&cm, k, and the test-set draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cinefoley.variations import (VariationParams, VariationSampler, apply, apply_batch, camera_move,
                                  close_up, draw_params, params_for_clip, visible_fraction)

N_DRAWS = 500


def _draws(kind: str, t: int, h: int, w: int, seed: int = 0, **kw) -> list[VariationParams]:
    g = torch.Generator().manual_seed(seed)
    return [draw_params(kind, t, h, w, generator=g, **kw) for _ in range(N_DRAWS)]


def _coordinate_video(t: int, h: int, w: int) -> torch.Tensor:
    """Float video whose channels hold each pixel's row, column and frame index."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")
    return torch.stack([torch.stack([y, x, torch.full_like(y, i)]) for i in range(t)])


def _random_video(t: int, h: int, w: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (t, 3, h, w), generator=g, dtype=torch.uint8)
    return torch.rand((t, 3, h, w), generator=g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# f_cu: the draws

def test_close_up_ratios_are_uniform_in_a1_a2_and_independent():
    ps = _draws("close_up", 8, 64, 64, a1=0.4, a2=0.6)
    r_h, r_w = np.array([p.r_h for p in ps]), np.array([p.r_w for p in ps])
    for r in (r_h, r_w):
        assert r.min() >= 0.4 and r.max() <= 0.6
        assert r.min() < 0.41 and r.max() > 0.59  # the whole interval is used
        assert abs(r.mean() - 0.5) < 0.01
        assert abs(r.std() - 0.2 / np.sqrt(12)) < 0.006  # U(a1, a2) has std (a2 - a1) / sqrt(12)
    assert abs(np.corrcoef(r_h, r_w)[0, 1]) < 0.15
    assert np.mean(r_h != r_w) == 1.0


@pytest.mark.parametrize("h, w", [(64, 64), (48, 80), (224, 224)])
def test_close_up_is_one_window_of_the_drawn_size_inside_the_frame(h, w):
    for p in _draws("close_up", 8, h, w):
        assert len(p.boxes) == 8 and len(set(p.boxes)) == 1
        top, left, bh, bw = p.boxes[0]
        assert (bh, bw) == (round(h * p.r_h), round(w * p.r_w))
        assert 0 <= top <= h - bh and 0 <= left <= w - bw


def test_close_up_positions_cover_the_free_room_uniformly():
    ps = _draws("close_up", 8, 64, 64)
    rel = {"top": [], "left": []}
    for p in ps:
        top, left, bh, bw = p.boxes[0]
        rel["top"].append(top / (64 - bh))
        rel["left"].append(left / (64 - bw))
    for values in rel.values():
        v = np.array(values)
        assert v.min() < 0.03 and v.max() > 0.97
        assert abs(v.mean() - 0.5) < 0.04
        # uniform, not piled up at the edges or the centre: each third gets about a third
        counts = np.histogram(v, bins=3, range=(0, 1))[0]
        assert counts.min() > N_DRAWS / 3 * 0.75


def test_a1_equal_a2_fixes_the_window_size():
    for p in _draws("close_up", 4, 50, 70, a1=0.5, a2=0.5)[:50]:
        assert p.boxes[0][2:] == (25, 35)


# ---------------------------------------------------------------------------------------------
# f_cm: the draws

def _check_slide(p: VariationParams, h: int, w: int) -> None:
    sizes = {b[2:] for b in p.boxes}
    assert len(sizes) == 1
    bh, bw = sizes.pop()
    assert (bh, bw) == (round(h * p.r_h), round(w * p.r_w))
    tops = np.array([b[0] for b in p.boxes])
    lefts = np.array([b[1] for b in p.boxes])
    assert np.all((0 <= tops) & (tops <= h - bh)) and np.all((0 <= lefts) & (lefts <= w - bw))
    if p.axis == "horizontal":
        moving, still, room, still_room = lefts, tops, w - bw, h - bh
    else:
        moving, still, room, still_room = tops, lefts, h - bh, w - bw
    assert np.all(still == still[0]) and abs(still[0] - still_room / 2) <= 0.5  # on the central axis
    steps = np.diff(moving)
    assert np.all(steps >= 0) or np.all(steps <= 0)  # monotonic
    assert {int(moving[0]), int(moving[-1])} == {0, room}  # from one edge to the other
    assert (moving[0] == room) == p.reverse


@pytest.mark.parametrize("h, w, axis", [(48, 80, "horizontal"), (90, 40, "vertical"), (224, 398, "horizontal")])
def test_camera_move_slides_edge_to_edge_along_the_long_axis(h, w, axis):
    ps = _draws("camera_move", 8, h, w)
    for p in ps:
        assert p.axis == axis
        _check_slide(p, h, w)
    reverse = np.mean([p.reverse for p in ps])
    assert 0.43 < reverse < 0.57  # both directions, 1:1


def test_camera_move_on_square_frames_uses_both_axes_one_to_one():
    ps = _draws("camera_move", 8, 64, 64)
    for p in ps:
        _check_slide(p, 64, 64)
    horizontal = np.mean([p.axis == "horizontal" for p in ps])
    assert 0.43 < horizontal < 0.57
    assert 0.43 < np.mean([p.reverse for p in ps]) < 0.57


def test_camera_move_window_moves_every_frame_of_a_long_clip():
    p = draw_params("camera_move", 32, 224, 224, generator=torch.Generator().manual_seed(3))
    moving = [b[1] if p.axis == "horizontal" else b[0] for b in p.boxes]
    assert len(set(moving)) == 32


# ---------------------------------------------------------------------------------------------
# applying a variation

@pytest.mark.parametrize("fn", [close_up, camera_move])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_variation_keeps_shape_and_dtype_and_replays_bit_for_bit(fn, dtype):
    video = _random_video(8, 48, 80, dtype)
    varied, params = fn(video, generator=torch.Generator().manual_seed(1))
    assert varied.shape == video.shape and varied.dtype == dtype
    assert not torch.equal(varied, video)
    assert torch.equal(apply(video, params), varied)
    assert torch.equal(apply(video, VariationParams.from_json(params.to_json())), varied)
    if dtype == torch.float32:
        assert varied.min() >= 0 and varied.max() <= 1


def test_same_generator_seed_gives_the_same_variation():
    video = _random_video(8, 64, 64, torch.uint8)
    a = close_up(video, generator=torch.Generator().manual_seed(7))
    b = close_up(video, generator=torch.Generator().manual_seed(7))
    c = close_up(video, generator=torch.Generator().manual_seed(8))
    assert a[1] == b[1] and torch.equal(a[0], b[0])
    assert a[1] != c[1]


@pytest.mark.parametrize("fn", [close_up, camera_move])
def test_full_frame_window_is_the_identity(fn):
    video = _random_video(6, 40, 56, torch.float32)
    varied, params = fn(video, a1=1.0, a2=1.0)
    assert all(b == (0, 0, 40, 56) for b in params.boxes)
    assert torch.equal(varied, video)


@pytest.mark.parametrize("fn", [close_up, camera_move])
@pytest.mark.parametrize("h, w", [(64, 64), (48, 80), (90, 40)])
def test_varied_frame_corners_come_from_the_window_corners(fn, h, w):
    video = _coordinate_video(8, h, w)
    varied, params = fn(video, generator=torch.Generator().manual_seed(h + w))
    for t, (top, left, bh, bw) in enumerate(params.boxes):
        frame = varied[t]
        assert frame[:, 0, 0].tolist() == [top, left, t]
        assert frame[:, -1, -1].tolist() == [top + bh - 1, left + bw - 1, t]
        # every pixel of the varied frame comes from inside the window (bilinear blends neighbours)
        eps = 1e-4
        assert frame[0].min() >= top - eps and frame[0].max() <= top + bh - 1 + eps
        assert frame[1].min() >= left - eps and frame[1].max() <= left + bw - 1 + eps


def test_close_up_magnifies_the_window_content():
    video = torch.zeros(4, 3, 64, 64)
    params = draw_params("close_up", 4, 64, 64, a1=0.5, a2=0.5, generator=torch.Generator().manual_seed(0))
    top, left, bh, bw = params.boxes[0]
    video[:, :, top:top + bh, left:left + bw] = 1.0
    assert torch.equal(apply(video, params), torch.ones_like(video))


def test_apply_rejects_params_for_another_shape_and_for_shape_fixes_it():
    video = _random_video(8, 64, 64, torch.uint8)
    params = draw_params("close_up", 8, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="for_shape"):
        apply(video, params)
    assert apply(video, params.for_shape(8, 64, 64)).shape == video.shape
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        apply(video[0], params)


def test_out_size_resizes_the_window():
    video = _coordinate_video(4, 64, 64)
    params = draw_params("close_up", 4, 64, 64, generator=torch.Generator().manual_seed(2))
    out = apply(video, params, out_size=(24, 40))
    assert out.shape == (4, 3, 24, 40)
    top, left, bh, bw = params.boxes[0]
    assert out[0, 0].min() >= top - 1e-4 and out[0, 0].max() <= top + bh - 1 + 1e-4


# ---------------------------------------------------------------------------------------------
# batched variations

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("t, h, w", [(8, 64, 64), (6, 48, 80), (5, 90, 40)])
@pytest.mark.parametrize("out_size", [None, (32, 32), (100, 60)])
def test_apply_batch_matches_per_clip_apply(dtype, t, h, w, out_size):
    g = torch.Generator().manual_seed(t * h + w)
    videos = torch.stack([_random_video(t, h, w, dtype, seed=s) for s in range(4)])
    params = [draw_params("close_up", t, h, w, generator=g), draw_params("camera_move", t, h, w, generator=g),
              None, draw_params("camera_move", t, h, w, generator=g)]
    out = apply_batch(videos, params, out_size=out_size)
    oh, ow = out_size or (h, w)
    assert out.shape == (4, t, 3, oh, ow) and out.dtype == dtype
    for b, p in enumerate(params):
        full = p or VariationParams("close_up", 1.0, 1.0, 0.0, 0.0, None, False, t, h, w, ((0, 0, h, w),) * t)
        ref = apply(videos[b], full, out_size=out_size)
        diff = (out[b].float() - ref.float()).abs().max().item()
        assert diff <= (1.0 if dtype == torch.uint8 else 1e-4)  # uint8: a rounding step at most
    if out_size is None:
        assert torch.equal(out[2], videos[2]) if dtype == torch.uint8 else torch.allclose(out[2], videos[2], atol=1e-5)


def test_apply_batch_rejects_bad_input():
    videos = torch.zeros(2, 4, 3, 32, 32)
    p = draw_params("close_up", 4, 32, 32)
    with pytest.raises(ValueError, match="2 clips"):
        apply_batch(videos, [p])
    with pytest.raises(ValueError, match="videos are"):
        apply_batch(videos, [p, p.for_shape(4, 16, 16)])
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        apply_batch(videos[0], [p, p])


# ---------------------------------------------------------------------------------------------
# the training-time sampler

@pytest.mark.parametrize("k", [0.0, 0.5, 0.75, 1.0])
def test_sampler_varies_a_share_k_of_the_clips(k):
    sampler = VariationSampler("cu", k=k)
    g = torch.Generator().manual_seed(0)
    draws = sampler.draw_batch(1000, 8, 64, 64, generator=g)
    varied = [p for p in draws if p is not None]
    share = len(varied) / len(draws)
    if k in (0.0, 1.0):
        assert share == k
    else:
        assert abs(share - k) < 0.05  # 1000 Bernoulli draws: std ≈ 0.016
    assert all(p.kind == "close_up" for p in varied)


def test_sampler_cu_and_cm_mixes_one_to_one():
    draws = VariationSampler("cu&cm", k=1.0).draw_batch(1000, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    kinds = [p.kind for p in draws]
    assert set(kinds) == {"close_up", "camera_move"}
    assert abs(kinds.count("close_up") / 1000 - 0.5) < 0.05
    cm = VariationSampler("cm", k=1.0).draw_batch(50, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    assert all(p.kind == "camera_move" for p in cm)


def test_sampler_draws_are_reproducible_and_feed_apply_batch():
    sampler = VariationSampler("cu&cm", k=0.5)
    a = sampler.draw_batch(16, 8, 64, 64, generator=torch.Generator().manual_seed(5))
    b = sampler.draw_batch(16, 8, 64, 64, generator=torch.Generator().manual_seed(5))
    assert a == b
    out = apply_batch(torch.zeros(16, 8, 3, 64, 64, dtype=torch.uint8), a)
    assert out.shape == (16, 8, 3, 64, 64)


@pytest.mark.parametrize("kwargs", [{"variation": "zoom"}, {"k": 1.5}, {"k": -0.1}])
def test_sampler_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        VariationSampler(**kwargs)


@pytest.mark.parametrize("a1, a2", [(0.0, 0.5), (0.6, 0.4), (0.5, 1.2)])
def test_bad_crop_ratios_raise(a1, a2):
    with pytest.raises(ValueError, match="a1"):
        draw_params("close_up", 8, 64, 64, a1=a1, a2=a2)
    with pytest.raises(ValueError, match="a1"):
        close_up(torch.zeros(8, 3, 64, 64), a1=a1, a2=a2)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        draw_params("dolly_zoom", 8, 64, 64)


# ---------------------------------------------------------------------------------------------
# test-set draws and bookkeeping

def test_params_for_clip_depend_only_on_clip_kind_and_seed():
    ids = [f"clip_{i:03d}" for i in range(20)]
    forward = {i: params_for_clip(i, "close_up", 8, 64, 64, seed=0) for i in ids}
    backward = {i: params_for_clip(i, "close_up", 8, 64, 64, seed=0) for i in reversed(ids)}
    assert forward == backward
    assert len({p.boxes for p in forward.values()}) == len(ids)
    other_seed = {i: params_for_clip(i, "close_up", 8, 64, 64, seed=1) for i in ids}
    assert all(other_seed[i].boxes != forward[i].boxes for i in ids)
    cm = params_for_clip(ids[0], "camera_move", 8, 64, 64)
    assert cm.kind == "camera_move" and cm.r_h != forward[ids[0]].r_h


def test_params_json_round_trip():
    for kind in ("close_up", "camera_move"):
        p = params_for_clip("x", kind, 8, 48, 80, seed=3)
        q = VariationParams.from_json(p.to_json())
        assert q == p and isinstance(q.boxes[0], tuple)


@pytest.mark.parametrize("kind", ["close_up", "camera_move"])
def test_for_shape_keeps_the_relative_draw(kind):
    p = params_for_clip("clip", kind, 8, 64, 64, seed=0)
    q = p.for_shape(32, 224, 224)
    assert (q.r_h, q.r_w, q.u_top, q.u_left, q.axis, q.reverse) == (p.r_h, p.r_w, p.u_top, p.u_left, p.axis, p.reverse)
    assert (q.n_frames, q.height, q.width, len(q.boxes)) == (32, 224, 224, 32)
    scale = 224 / 64
    for a, b in ((p.boxes[0], q.boxes[0]), (p.boxes[-1], q.boxes[-1])):
        assert np.allclose(np.array(b), np.array(a) * scale, atol=scale)
    assert p.for_shape(8, 64, 64) == p


@pytest.mark.parametrize("obj, window, expected", [
    ((10, 10, 10, 10), (0, 0, 64, 64), 1.0),     # inside
    ((10, 10, 10, 10), (30, 30, 20, 20), 0.0),   # apart
    ((10, 10, 10, 10), (20, 0, 40, 40), 0.0),    # touching edges share no pixel
    ((10, 10, 10, 10), (15, 0, 40, 40), 0.5),    # lower half
    ((10, 10, 10, 20), (0, 15, 64, 5), 0.25),    # a vertical strip through it
    ((0, 0, 8, 8), (4, 4, 8, 8), 0.25),          # one quadrant
    ((5, 5, 0, 4), (0, 0, 64, 64), 0.0),         # empty box
])
def test_visible_fraction(obj, window, expected):
    assert visible_fraction(obj, window) == pytest.approx(expected)


def test_visible_fraction_by_hand():
    window = (10, 10, 20, 20)  # (top, left, height, width)
    assert visible_fraction((12, 0, 4, 5), window) == 0.0  # beside the window: rows overlap, columns do not
    assert visible_fraction((0, 12, 5, 4), window) == 0.0  # above it
    assert visible_fraction((15, 15, 1, 1), window) == 1.0  # a one-pixel object inside
    assert visible_fraction((5, 20, 10, 20), window) == pytest.approx(0.25)  # 5 of 10 rows, 10 of 20 columns
