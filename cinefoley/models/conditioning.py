"""The conditioning embedder of Diff-Foley's LDM (its ``cond_stage_model``).

Diff-Foley's ``Video_Feat_Encoder_Posembed``: a Linear layer maps each per-frame video feature
(CAVP: 512-d) to the cross-attention width (768), and a learned position embedding is added at
positions 0..T-1. The attribute names match the released checkpoint's keys
(``cond_stage_model.embedder.0.{weight,bias}``, ``cond_stage_model.pos_emb.weight``) so that
weights load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn


class VideoFeatEmbedder(nn.Module):
    """c (B, T, in_dim) -> cross-attention context (B, T, out_dim); T <= seq_len."""

    def __init__(self, in_dim: int = 512, out_dim: int = 768, seq_len: int = 40):
        super().__init__()
        self.embedder = nn.Sequential(nn.Linear(in_dim, out_dim))
        self.pos_emb = nn.Embedding(seq_len, out_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        t = feats.shape[1]
        if t > self.pos_emb.num_embeddings:
            raise ValueError(f"{t} frames of features, but the position embedding has only "
                             f"{self.pos_emb.num_embeddings}")
        pos = self.pos_emb(torch.arange(t, device=feats.device))
        return self.embedder(feats) + pos
