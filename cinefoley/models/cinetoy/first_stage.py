"""CineToy's first stage: a closed-form linear autoencoder of the mel (PCA of its mel-band x time patches).

Diff-Foley diffuses the 4 x 16 x 64 latent of a KL autoencoder (its "first stage"), not the mel.
CineToy keeps that shape of the idea at no training cost: the mel is cut into patches of ``patch =
(bands, frames)`` mel bins x mel frames, each patch is projected on the ``channels`` leading principal
components of the training patches, and the latent is scaled to unit standard deviation, as LDM's
``scale_by_std`` does (Diff-Foley's 0.18215). Decoding is the transpose projection plus the mean
patch, so encode -> decode is the best rank-``channels`` linear reconstruction of every patch.

Why tall, narrow patches (the CineToy default is 64 x 4): a CineToy sound is a tone whose pitch says its
class and whose onsets say its timing. A patch 4 mel frames wide (64 ms) places an onset to a quarter of
a video frame, where a 16 x 16 patch (0.256 s, one video frame) smears it over a whole latent column; the
height is free, because a tone's spectrum is nearly the same at every instant, so 8 components of a
64-band half-spectrum hold its shape. Measured on the demo world's held-out mels (notebook 02 shows it):
64 x 4 with 8 components reconstructs as well as 16 x 16 with 8 and gives 8x finer time steps.

Why not diffuse the folded mel itself: a fold has bands x frames channels (256 here), more than a CPU-sized
UNet's width; a UNet cannot pass that many noise channels through a narrower trunk, so its eps loss
stalls near 1 and the condition is never learnt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def patch_size(patch: int | Sequence[int]) -> tuple[int, int]:
    """(mel bands, mel frames) of a patch given as one side or as a pair."""
    bands, frames = (patch, patch) if isinstance(patch, int) else patch
    return int(bands), int(frames)


class PatchPCA(nn.Module):
    """mel (B, n_mels, N) in [0, 1] <-> z (B, channels, n_mels / bands, N / frames); fitted by :meth:`fit`.

    ``patch``: (bands, frames) of a patch, or one int for a square patch.
    """

    def __init__(self, n_mels: int = 128, patch: int | Sequence[int] = (64, 4), channels: int = 8):
        super().__init__()
        bands, frames = patch_size(patch)
        size = bands * frames
        if n_mels % bands:
            raise ValueError(f"patch height {bands} must divide n_mels {n_mels}")
        if not 0 < channels <= size:
            raise ValueError(f"channels must be in 1..{size} for patch {bands} x {frames}, got {channels}")
        self.n_mels, self.patch, self.channels = n_mels, (bands, frames), channels
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("basis", torch.eye(size)[:channels])   # (channels, size), orthonormal rows; identity until fitted
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("variances", torch.ones(size))  # every component's variance, for inspection

    def _patches(self, mel: torch.Tensor) -> torch.Tensor:
        bands, frames = self.patch
        if mel.ndim != 3 or mel.shape[1] != self.n_mels or mel.shape[2] % frames:
            raise ValueError(f"expected a mel batch (B, {self.n_mels}, multiple of {frames}), "
                             f"got shape {tuple(mel.shape)}")
        b, n = len(mel), mel.shape[2]
        x = mel.float().reshape(b, self.n_mels // bands, bands, n // frames, frames)
        return x.permute(0, 2, 4, 1, 3).reshape(b, bands * frames, self.n_mels // bands, n // frames)

    def _unpatch(self, x: torch.Tensor) -> torch.Tensor:
        bands, frames = self.patch
        b, _, h, w = x.shape
        return x.reshape(b, bands, frames, h, w).permute(0, 3, 1, 4, 2).reshape(b, h * bands, w * frames)

    @torch.no_grad()
    def fit(self, mels: torch.Tensor) -> "PatchPCA":
        """Principal components of the patches of ``mels``; then the scale that gives the latents unit std."""
        x = self._patches(mels).transpose(0, 1).reshape(len(self.mean), -1).double()
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
        return self._unpatch(x).clamp(0, 1)
