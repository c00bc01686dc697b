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

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cinefoley.variations import VariationParams

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


# ---------------------------------------------------------------------------------------------
# Figure 6 and its number, for any world

def figure_clips(world, n: int, kind: str = "cu") -> list[str]:
    """The test clips Figure 6 shows: the first ``n`` whose sounding object stays at least half in view
    under ``kind`` when the world has boxes, else the first ``n``."""
    rows = world.test_sets()[kind]
    ids = [c for c in rows["clip_id"].astype(str) if c in set(world.test_clip_ids())]
    if world.has_boxes:
        visible = dict(zip(rows["clip_id"].astype(str), rows["visible_fraction"]))
        ids = [c for c in ids if visible[c] > 0.5] + [c for c in ids if visible[c] <= 0.5]
    return ids[:n]


def encoder_maps(world, clip_id: str, kind: str = "cu", systems: Sequence[str] = ("baseline", "cu@75")
                 ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """The clip as test set ``kind`` shows it to the encoders, uint8 (T, 3, S, S), and each system's
    Grad-CAM maps (T, S, S); target: the similarity to the teacher's features of the full clip."""
    frames = world.encoder_input(kind, [clip_id])
    reference = world.features("baseline", "original")[clip_id][None]
    maps = {s: grad_cam(world.encoder(s), frames, reference[:, :frames.shape[1]])[0] for s in systems}
    return frames[0], maps


def attention_table(world, kinds: Sequence[str] = ("cu", "cm"), systems: Sequence[str] = ("baseline", "cu@75"), *,
                    n_boot: int = 1000, seed: int = 0, batch_size: int = 16) -> pd.DataFrame:
    """Per test set and encoder, over every test clip: the Grad-CAM target (mean cos of the clip's
    features to the teacher's features of the full clip) and, when the world has ground-truth boxes,
    the share of attention on the sounding object against what an even spread would score, each with
    a bootstrap 95 % interval over clips."""
    from cinefoley.metrics import bootstrap_ci

    rows = []
    reference = world.features("baseline", "original")
    for kind in kinds:
        manifest = world.test_sets()[kind].set_index("clip_id")
        ids = [c for c in world.test_clip_ids() if c in reference]
        for system in systems:
            encoder, feats = world.encoder(system), world.features(system, kind)
            target = np.array([float(F.cosine_similarity(reference[c], feats[c], dim=-1).mean()) for c in ids])
            row = {"test_set": kind, "encoder": "teacher" if system == "baseline" else f"student {system}",
                   "clips": len(ids)}
            ci = bootstrap_ci(target, np.array(ids), n_boot=n_boot, seed=seed)
            row.update(target_similarity=ci.estimate, target_lo=ci.lo, target_hi=ci.hi)
            if world.has_boxes:
                share, chance = _object_shares(world, encoder, kind, ids, manifest, reference, batch_size)
                ok = ~np.isnan(share)
                ci = bootstrap_ci(share[ok], np.array(ids)[ok], n_boot=n_boot, seed=seed)
                row.update(share_on_object=ci.estimate, share_lo=ci.lo, share_hi=ci.hi,
                           chance=float(np.nanmean(chance)), clips_with_object_in_view=int(ok.sum()))
            rows.append(row)
    return pd.DataFrame(rows)


def _object_shares(world, encoder, kind, ids, manifest, reference, batch_size):
    share, chance = [], []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        videos = world.encoder_input(kind, chunk)
        maps = grad_cam(encoder, videos, torch.stack([reference[c] for c in chunk]))
        for cid, m in zip(chunk, maps):
            row = manifest.loc[cid]
            params = row["variation_params"]
            windows = VariationParams.from_json(params).boxes if isinstance(params, str) and params else None
            s, c = attention_on_object(m, json.loads(row["boxes"]), windows,
                                       frame_size=(int(row["height"]), int(row["width"])))
            share.append(s)
            chance.append(c)
    return np.array(share), np.array(chance)
