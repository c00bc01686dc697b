"""Where does the encoder look? Grad-CAM of the teacher and the student (paper Figure 6).

The video encoders output a feature sequence c (T, 512), not class logits, so the Grad-CAM target
is a similarity: the mean over frames of cos(c_t, r_t), where r is a reference sequence — by
default the *teacher's* feature of the full-frame clip (what the student is trained to reproduce),
or any other (T, 512) sequence such as per-frame audio embeddings. Activations of the encoder's
last convolutional stage are folded to (B, C, T, h, w), so pytorch-grad-cam's 3-D path gives one
heat map per frame, (T, H, W), each clip min-max scaled to [0, 1].

Handled pitfalls (reference/ecosystem.md §1): a frozen teacher has no gradients, so the input is
made to require them; the pass runs with autograd enabled even if called under ``no_grad``, in
fp32 with autocast off; the CAM object is released explicitly instead of through its context
manager, which swallows ``IndexError``; ``BaseCAM`` switches the model to eval mode, which we undo.

The number behind the pictures: :func:`attention_on_object`, the share of a map's mass inside the
sounding object's ground-truth box (CineToy), frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Box = Sequence[int]  # (top, left, height, width)


class FrameSimilarityTarget:
    """Grad-CAM target: mean over frames of cos(c_t, r_t) for one clip's output c (T, D)."""

    def __init__(self, reference: torch.Tensor):
        self.reference = reference

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(output, self.reference.to(output.device, output.dtype), dim=-1).mean()


class _ChannelsFirst(nn.Module):
    """pytorch-grad-cam reads the CAM's (T, H, W) size off a 5-D input as (…, T, H, W), so feed
    the encoder (B, C, T, H, W) and hand it (B, T, C, H, W)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.permute(0, 2, 1, 3, 4))


def grad_cam(encoder: nn.Module, videos: torch.Tensor, references: torch.Tensor, *,
             layer: nn.Module | None = None) -> np.ndarray:
    """Per-frame Grad-CAM maps (B, T, H, W) in [0, 1] of ``encoder`` on ``videos`` (B, T, 3, H, W).

    ``references`` (B, T, D): the sequence each clip's features are compared with. ``layer``
    defaults to ``encoder.cam_layer``; if the encoder has ``cam_reshape(T)`` (per-frame 2-D
    activations), it is used to fold them to (B, C, T, h, w).
    """
    from pytorch_grad_cam import GradCAM

    if videos.ndim != 5:
        raise ValueError(f"videos must be (B, T, 3, H, W), got {tuple(videos.shape)}")
    b, t = videos.shape[:2]
    layer = layer or encoder.cam_layer
    reshape = encoder.cam_reshape(t) if hasattr(encoder, "cam_reshape") else None
    was_training = encoder.training
    param = next(encoder.parameters())
    x = videos.to(param.device)
    x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).permute(0, 2, 1, 3, 4).contiguous()
    x.requires_grad_(True)  # a frozen teacher has no parameter that needs a gradient
    cam = GradCAM(model=_ChannelsFirst(encoder), target_layers=[layer], reshape_transform=reshape)
    try:
        with torch.enable_grad(), torch.autocast(param.device.type, enabled=False):
            maps = cam(input_tensor=x, targets=[FrameSimilarityTarget(r) for r in references])
    finally:
        cam.activations_and_grads.release()
        encoder.train(was_training)
    return np.asarray(maps, dtype=np.float32)


def box_in_view(box: Box, window: Box, out_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Where an object box of the full frame lands in a crop ``window`` resized to ``out_size``.

    Returns (top, left, height, width) in output pixels (floats), or None when nothing is in view.
    """
    bt, bl, bh, bw = box
    wt, wl, wh, ww = window
    top, left = max(bt, wt), max(bl, wl)
    bottom, right = min(bt + bh, wt + wh), min(bl + bw, wl + ww)
    if bottom <= top or right <= left:
        return None
    sy, sx = out_size[0] / wh, out_size[1] / ww
    return (top - wt) * sy, (left - wl) * sx, (bottom - top) * sy, (right - left) * sx


def mass_in_box(cam: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of a map's (H, W) total mass inside a (possibly fractional) box."""
    h, w = cam.shape
    top, left, bh, bw = box
    ys = np.clip(np.minimum(np.arange(h) + 1, top + bh) - np.maximum(np.arange(h), top), 0, 1)
    xs = np.clip(np.minimum(np.arange(w) + 1, left + bw) - np.maximum(np.arange(w), left), 0, 1)
    total = float(cam.sum())
    return float((cam * ys[:, None] * xs[None, :]).sum() / total) if total > 0 else float("nan")


def attention_on_object(maps: np.ndarray, boxes: Sequence[Box], windows: Sequence[Box] | None = None,
                        frame_size: tuple[int, int] | None = None) -> tuple[float, float]:
    """(share of attention inside the object box, share of the frame the box covers), averaged
    over the frames of one clip in which the object is in view.

    ``maps`` (T, H, W) are the clip's maps; ``boxes`` its ground-truth boxes in the *original*
    frame; ``windows`` the variation's crop windows (None for an original clip) and ``frame_size``
    the original (H, W). The second number is what a map spread evenly would score (chance).
    Returns (nan, nan) when the object is never in view.
    """
    t, h, w = maps.shape
    shares, chance = [], []
    for i in range(t):
        if windows is None:
            in_view = box_in_view(boxes[i], (0, 0, *(frame_size or (h, w))), (h, w))
        else:
            in_view = box_in_view(boxes[i], windows[i], (h, w))
        if in_view is None:
            continue
        shares.append(mass_in_box(maps[i], in_view))
        chance.append(in_view[2] * in_view[3] / (h * w))
    if not shares:
        return float("nan"), float("nan")
    return float(np.nanmean(shares)), float(np.mean(chance))
