"""Cinematic language variations f (paper §3.2): close-up f_cu and camera movement f_cm.

A variation crops a window out of every frame of a clip and resizes it back to the frame size:

* **f_cu (close-up)**: one window for all frames, of size H' = H·r_h, W' = W·r_w with
  r_h, r_w ~ U(a1, a2) drawn independently (paper: a1 = 0.4, a2 = 0.6). The paper does not say
  where the window sits; we place it uniformly over the frame and record where.
* **f_cm (camera movement)**: a window of the same size slides monotonically along the frame's
  central axis, from one edge to the other over the clip: horizontally and vertically centred
  when W > H, vertically and horizontally centred when H > W, direction at random. For H = W
  (not covered by the paper) the axis is drawn at random, 1:1.
* **f_cu&cm**: a varied clip gets f_cu or f_cm with ratio 1:1.
* **k**: the proportion of training clips that get a variation (:class:`VariationSampler`).

Every call returns ``(varied, params)``; :func:`apply` replays ``params`` bit for bit, and
:func:`apply_batch` applies different windows to a whole batch in one call (same pixels to float
tolerance). Windows are whole pixels; the random draws are kept resolution-free in ``params``
(``r_h, r_w, u_top, u_left, axis, reverse``) so that :meth:`VariationParams.for_shape` can place
the same variation on a clip of another size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from cinefoley.utils import stable_hash

KINDS = ("close_up", "camera_move")
Box = tuple[int, int, int, int]  # (top, left, height, width) in input pixels


@dataclass(frozen=True)
class VariationParams:
    """Everything needed to replay a variation on a clip of ``n_frames`` × ``height`` × ``width``.

    ``boxes[t]`` is the window of frame t as ``(top, left, height, width)``.
    """

    kind: str
    r_h: float
    r_w: float
    u_top: float  # f_cu: where the window sits, as a fraction of the free room (0 = top/left edge)
    u_left: float
    axis: str | None  # f_cm: "horizontal" or "vertical"
    reverse: bool  # f_cm: right-to-left / bottom-to-top
    n_frames: int
    height: int
    width: int
    boxes: tuple[Box, ...]

    def for_shape(self, n_frames: int, height: int, width: int) -> "VariationParams":
        """The same draw placed on a clip of another length or frame size."""
        return resolve(self.kind, self.r_h, self.r_w, self.u_top, self.u_left, self.axis,
                        self.reverse, n_frames, height, width)

    def to_json(self) -> str:
        d = asdict(self)
        d["boxes"] = [list(b) for b in self.boxes]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "VariationParams":
        d = json.loads(text)
        d["boxes"] = tuple(tuple(int(v) for v in b) for b in d["boxes"])
        return cls(**d)


def _crop_size(r: float, size: int) -> int:
    return max(1, min(size, round(size * r)))


def resolve(kind, r_h, r_w, u_top, u_left, axis, reverse, n_frames, height, width) -> VariationParams:
    """Place resolution-free draws (fractions of the frame) on a clip of ``n_frames`` × ``height`` × ``width``."""
    ch, cw = _crop_size(r_h, height), _crop_size(r_w, width)
    room_h, room_w = height - ch, width - cw
    if kind == "close_up":
        box = (round(u_top * room_h), round(u_left * room_w), ch, cw)
        boxes = (box,) * n_frames
    elif kind == "camera_move":
        steps = [t / (n_frames - 1) if n_frames > 1 else 0.0 for t in range(n_frames)]
        if reverse:
            steps = [1.0 - s for s in steps]
        if axis == "horizontal":
            boxes = tuple((room_h // 2, round(s * room_w), ch, cw) for s in steps)
        elif axis == "vertical":
            boxes = tuple((round(s * room_h), room_w // 2, ch, cw) for s in steps)
        else:
            raise ValueError(f"camera_move needs axis 'horizontal' or 'vertical', got {axis!r}")
    else:
        raise ValueError(f"unknown variation kind {kind!r}; expected one of {KINDS}")
    return VariationParams(kind, float(r_h), float(r_w), float(u_top), float(u_left), axis,
                           bool(reverse), n_frames, height, width, boxes)


def _uniform(generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64).item()


def draw_params(kind: str, n_frames: int, height: int, width: int, *, a1: float = 0.4,
                a2: float = 0.6, generator: torch.Generator | None = None) -> VariationParams:
    """Draw the random parameters of f_cu or f_cm for a clip of the given shape."""
    if not 0.0 < a1 <= a2 <= 1.0:
        raise ValueError(f"need 0 < a1 <= a2 <= 1, got a1={a1}, a2={a2}")
    r_h, r_w = _uniform(generator, a1, a2), _uniform(generator, a1, a2)
    u_top, u_left = _uniform(generator), _uniform(generator)
    if width > height:
        axis = "horizontal"
    elif height > width:
        axis = "vertical"
    else:  # square frames: the paper is silent; pick the axis 1:1
        axis = "horizontal" if _uniform(generator) < 0.5 else "vertical"
    reverse = _uniform(generator) < 0.5
    if kind == "close_up":
        axis, reverse = None, False
    else:
        u_top = u_left = 0.5
    return resolve(kind, r_h, r_w, u_top, u_left, axis, reverse, n_frames, height, width)


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 4:
        raise ValueError(f"video must be (T, C, H, W), got shape {tuple(video.shape)}")


def _to_float(video: torch.Tensor) -> torch.Tensor:
    return video.float() if not video.is_floating_point() else video


def _from_float(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dtype == torch.uint8:
        return x.round().clamp(0, 255).to(torch.uint8)
    return x.to(like.dtype)


def apply(video: torch.Tensor, params: VariationParams,
          out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Replay ``params`` on ``video`` (T, C, H, W): crop each frame's window, resize it back.

    The result has the input's shape and dtype (or ``out_size`` as (H, W) when given). Bilinear
    resizing, ``align_corners=False``; uint8 input is rounded back to uint8.
    """
    _check_video(video)
    t, _, h, w = video.shape
    if (params.n_frames, params.height, params.width) != (t, h, w):
        raise ValueError(f"params are for a clip of {params.n_frames}×{params.height}×{params.width}, "
                         f"video is {t}×{h}×{w}; use params.for_shape(...)")
    out_size = out_size or (h, w)
    x = _to_float(video)
    frames = [F.interpolate(x[i:i + 1, :, top:top + bh, left:left + bw], size=out_size,
                            mode="bilinear", align_corners=False)
              for i, (top, left, bh, bw) in enumerate(params.boxes)]
    return _from_float(torch.cat(frames), video)


def close_up(video: torch.Tensor, *, a1: float = 0.4, a2: float = 0.6,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, VariationParams]:
    """f_cu: crop all frames with one window of H·r_h × W·r_w, r ~ U(a1, a2), resize back."""
    _check_video(video)
    t, _, h, w = video.shape
    params = draw_params("close_up", t, h, w, a1=a1, a2=a2, generator=generator)
    return apply(video, params), params


def camera_move(video: torch.Tensor, *, a1: float = 0.4, a2: float = 0.6,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, VariationParams]:
    """f_cm: a window of the f_cu size sliding edge to edge along the central axis, resized back."""
    _check_video(video)
    t, _, h, w = video.shape
    params = draw_params("camera_move", t, h, w, a1=a1, a2=a2, generator=generator)
    return apply(video, params), params


def _axis_coords(starts: torch.Tensor, lengths: torch.Tensor, out: int, full: int) -> torch.Tensor:
    """grid_sample coordinates that reproduce F.interpolate(bilinear, align_corners=False) of a
    crop [start, start + length) resized to ``out`` samples, in a frame of ``full`` pixels."""
    i = torch.arange(out, dtype=torch.float64, device=starts.device)
    src = ((i[None] + 0.5) * lengths[:, None].double() / out - 0.5).clamp(min=0.0)
    src = torch.minimum(src, lengths[:, None].double() - 1)
    pix = starts[:, None].double() + src
    return (2.0 * (pix + 0.5) / full - 1.0).float()


def apply_batch(videos: torch.Tensor, params: list[VariationParams | None],
                out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Apply a different variation to each clip of ``videos`` (B, T, C, H, W) in one call.

    ``params[b] = None`` leaves clip b as it is (resized to ``out_size`` if given). Runs on the
    videos' device (one ``grid_sample`` for the whole batch) and gives the pixels of
    :func:`apply` to float tolerance.
    """
    if videos.ndim != 5:
        raise ValueError(f"videos must be (B, T, C, H, W), got shape {tuple(videos.shape)}")
    b, t, c, h, w = videos.shape
    if len(params) != b:
        raise ValueError(f"{len(params)} params for a batch of {b} clips")
    oh, ow = out_size or (h, w)
    boxes = []
    for p in params:
        if p is None:
            boxes.extend([(0, 0, h, w)] * t)
        elif (p.n_frames, p.height, p.width) != (t, h, w):
            raise ValueError(f"params for {p.n_frames}×{p.height}×{p.width}, videos are {t}×{h}×{w}")
        else:
            boxes.extend(p.boxes)
    bx = torch.tensor(boxes, device=videos.device)
    gy = _axis_coords(bx[:, 0], bx[:, 2], oh, h)  # (B*T, oh)
    gx = _axis_coords(bx[:, 1], bx[:, 3], ow, w)  # (B*T, ow)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    x = _to_float(videos).reshape(b * t, c, h, w)
    out = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return _from_float(out.reshape(b, t, c, oh, ow), videos)


@dataclass(frozen=True)
class VariationSampler:
    """Which variation each training clip gets: f ∈ {cu, cm, cu&cm}, applied with probability k.

    Paper settings: main result f_cu with k = 0.75; ablations f_cu / f_cm / f_cu&cm with
    k = 0.5 / 0.5 / 0.667, and k ∈ {0.5, 0.75, 1.0} for f_cu. Under "cu&cm" a varied clip gets f_cu
    or f_cm 1:1. Each clip is varied independently with probability k (a Bernoulli draw).
    """

    variation: str = "cu"
    k: float = 0.75
    a1: float = 0.4
    a2: float = 0.6

    def __post_init__(self):
        if self.variation not in ("cu", "cm", "cu&cm"):
            raise ValueError(f"variation must be 'cu', 'cm' or 'cu&cm', got {self.variation!r}")
        if not 0.0 <= self.k <= 1.0:
            raise ValueError(f"k must be in [0, 1], got {self.k}")

    def draw(self, n_frames: int, height: int, width: int,
             generator: torch.Generator | None = None) -> VariationParams | None:
        """Parameters for one clip, or ``None`` when the clip stays unvaried (probability 1 − k)."""
        varied = _uniform(generator) < self.k
        pick_cu = _uniform(generator) < 0.5  # drawn always, so the stream does not depend on k
        if not varied:
            return None
        kind = {"cu": "close_up", "cm": "camera_move"}.get(self.variation)
        kind = kind or ("close_up" if pick_cu else "camera_move")
        return draw_params(kind, n_frames, height, width, a1=self.a1, a2=self.a2, generator=generator)

    def draw_batch(self, batch: int, n_frames: int, height: int, width: int,
                   generator: torch.Generator | None = None) -> list[VariationParams | None]:
        return [self.draw(n_frames, height, width, generator) for _ in range(batch)]

    def draw_for_clip(self, clip_id: str, epoch: int, seed: int, n_frames: int, height: int,
                      width: int) -> VariationParams | None:
        """The variation of a training clip in an epoch, from a hash of (seed, epoch, clip id): the same
        in any process, worker or rank that loads the clip."""
        g = torch.Generator().manual_seed(stable_hash("distill", seed, epoch, clip_id))
        return self.draw(n_frames, height, width, generator=g)


def params_for_clip(clip_id: str, kind: str, n_frames: int, height: int, width: int, *,
                    seed: int = 0, a1: float = 0.4, a2: float = 0.6) -> VariationParams:
    """The test-set variation of one clip, derived from a hash of (clip id, kind, seed).

    The same clip gets the same variation whatever subset of the dataset a user has.
    """
    g = torch.Generator().manual_seed(stable_hash("cinefoley-testset", clip_id, kind, seed))
    return draw_params(kind, n_frames, height, width, a1=a1, a2=a2, generator=g)


def visible_fraction(object_box: Box, window: Box) -> float:
    """Share of the object's box (top, left, h, w) that lies inside the window."""
    ot, ol, oh, ow = object_box
    wt, wl, wh, ww = window
    ih = max(0, min(ot + oh, wt + wh) - max(ot, wt))
    iw = max(0, min(ol + ow, wl + ww) - max(ol, wl))
    area = oh * ow
    return ih * iw / area if area > 0 else 0.0

