"""CineToy's first stage: a closed-form linear autoencoder of the mel (PCA of its p x p patches).

Diff-Foley diffuses the 4 x 16 x 64 latent of a KL autoencoder (its "first stage"), not the mel.
CineToy keeps that shape of the idea at no training cost: the mel is cut into p x p patches
(``pixel_unshuffle``), each patch is projected on the ``channels`` leading principal components of
the training patches, and the latent is scaled to unit standard deviation, as LDM's
``scale_by_std`` does (Diff-Foley's 0.18215). Decoding is the transpose projection plus the mean
patch, so encode -> decode is the best rank-``channels`` linear reconstruction of every patch.

Why not diffuse the folded mel itself: a p x p fold has p^2 = 64 channels, more than a CPU-sized
UNet's width, and a UNet cannot pass 64 noise channels through a narrower trunk, so its eps loss
stalls near 1 and the condition is never learnt. CineToy's mels are smooth tones over a noise floor:
16 components of the 8 x 8 patches hold ~96 % of their variance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchPCA(nn.Module):
    """mel (B, n_mels, N) in [0, 1] <-> z (B, channels, n_mels / patch, N / patch); fitted by :meth:`fit`."""

    def __init__(self, n_mels: int = 128, patch: int = 8, channels: int = 16):
        super().__init__()
        if n_mels % patch:
            raise ValueError(f"patch {patch} must divide n_mels {n_mels}")
        if not 0 < channels <= patch * patch:
            raise ValueError(f"channels must be in 1..{patch * patch} for patch {patch}, got {channels}")
        self.n_mels, self.patch, self.channels = n_mels, patch, channels
        self.register_buffer("mean", torch.zeros(patch * patch))
        basis = torch.eye(patch * patch)[:channels]  # identity until fitted
        self.register_buffer("basis", basis)           # (channels, patch^2), orthonormal rows
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("variances", torch.ones(patch * patch))  # every component's variance, for inspection

    def _patches(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.n_mels or mel.shape[2] % self.patch:
            raise ValueError(f"expected a mel batch (B, {self.n_mels}, multiple of {self.patch}), "
                             f"got shape {tuple(mel.shape)}")
        return F.pixel_unshuffle(mel.float().unsqueeze(1), self.patch)  # (B, p^2, h, w)

    @torch.no_grad()
    def fit(self, mels: torch.Tensor) -> "PatchPCA":
        """Principal components of the patches of ``mels``; then the scale that gives the latents unit std."""
        x = self._patches(mels).transpose(0, 1).reshape(self.patch ** 2, -1).double()
        mean = x.mean(1)
        cov = torch.cov(x, correction=0)
        eigvals, eigvecs = torch.linalg.eigh(cov)                  # ascending
        eigvals, eigvecs = eigvals.flip(0).clamp_min(0), eigvecs.flip(1)
        # eigh's signs are arbitrary: make each component's largest entry positive, so fits are reproducible
        signs = torch.sign(eigvecs.gather(0, eigvecs.abs().argmax(0, keepdim=True)))
        eigvecs = eigvecs * signs
        self.mean.copy_(mean)
        self.variances.copy_(eigvals)
        self.basis.copy_(eigvecs[:, : self.channels].T)
        self.scale.fill_(1.0)
        self.scale.fill_(self.encode(mels).std().clamp_min(1e-6))
        return self

    def explained_variance(self) -> float:
        """Share of the patch variance that the kept components hold (after :meth:`fit`)."""
        return (self.variances[: self.channels].sum() / self.variances.sum().clamp_min(1e-12)).item()

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        x = self._patches(mel) - self.mean[:, None, None]
        return torch.einsum("kc,bchw->bkhw", self.basis, x) / self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mel (B, n_mels, N), clipped to [0, 1]."""
        x = torch.einsum("kc,bkhw->bchw", self.basis, z * self.scale) + self.mean[:, None, None]
        return F.pixel_shuffle(x, self.patch).squeeze(1).clamp(0, 1)
