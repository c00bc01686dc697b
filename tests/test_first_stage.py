"""The closed-form first stage of CineToy's generator (cinefoley.models.cinetoy.first_stage.PatchPCA)."""

import pytest
import torch
import torch.nn.functional as F
from synthetic_av import make_clips

from cinefoley.models.cinetoy.first_stage import PatchPCA


@pytest.fixture(scope="module")
def mels():
    return make_clips(24, seed=2, size=16).mels


@pytest.mark.parametrize("patch, channels", [(8, 64), (16, 256), ((64, 4), 256)])
def test_full_basis_round_trip_is_exact_and_unit_std(mels, patch, channels):
    pca = PatchPCA(128, patch, channels).fit(mels)
    z = pca.encode(mels)
    bands, frames = (patch, patch) if isinstance(patch, int) else patch
    assert z.shape == (24, channels, 128 // bands, 128 // frames)
    assert (z.std() - 1).abs() < 1e-4 and z.mean().abs() < 1e-4
    assert torch.allclose(pca.decode(z), mels, atol=1e-5)


def test_truncated_basis_is_the_principal_subspace(mels):
    pca = PatchPCA(128, 8, 6).fit(mels)
    patches = F.pixel_unshuffle(mels.unsqueeze(1), 8).transpose(0, 1).reshape(64, -1)
    cov = torch.cov(patches.double(), correction=0)
    eig = torch.linalg.eigvalsh(cov).flip(0)
    # orthonormal rows spanning the 6 leading eigenvectors: B C B^T = diag(top eigenvalues)
    b = pca.basis.double()
    assert torch.allclose(b @ b.T, torch.eye(6, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(b @ cov @ b.T, torch.diag(eig[:6]), atol=1e-6)
    assert pca.explained_variance() == pytest.approx((eig[:6].sum() / eig.sum()).item(), rel=1e-5)
    # reconstruction error per pixel is the discarded variance (clipping to [0, 1] can only lower it)
    err = F.mse_loss(pca.decode(pca.encode(mels)), mels).item()
    assert err <= eig[6:].sum().item() / 64 * 1.0001
    assert err > 0.9 * eig[6:].sum().item() / 64


def test_a_patch_is_a_block_of_mel_bands_by_mel_frames(mels):
    """Patch (i, j) of a (64, 4) first stage holds mel bands 64 i .. 64 i + 63 at frames 4 j .. 4 j + 3."""
    pca = PatchPCA(128, (64, 4), 8)
    patches = pca._patches(mels[:2])
    assert patches.shape == (2, 256, 2, 32)
    for i, j in ((0, 0), (1, 5), (1, 31)):
        block = mels[:2, 64 * i:64 * (i + 1), 4 * j:4 * (j + 1)]
        assert torch.equal(patches[:, :, i, j], block.reshape(2, -1))


def test_held_out_mels_reconstruct_within_a_bound():
    """Fitted on some clips, the default first stage (64 x 4 patches, 8 components) rebuilds clips it never saw."""
    data = make_clips(48, seed=5, size=16).mels
    pca = PatchPCA(128).fit(data[:32])
    err = F.mse_loss(pca.decode(pca.encode(data[32:])), data[32:]).item()
    assert err < 0.5 * data[32:].var().item(), err   # more than half of the held-out variance is kept


def test_fit_is_deterministic_and_signs_are_fixed(mels):
    a, b = PatchPCA(128, 8, 4).fit(mels), PatchPCA(128, 8, 4).fit(mels.flip(0))
    assert torch.allclose(a.basis, b.basis, atol=1e-5)
    assert (a.basis.gather(1, a.basis.abs().argmax(1, keepdim=True)) > 0).all()


def test_bad_shapes_are_refused(mels):
    with pytest.raises(ValueError, match="channels must be in 1..64"):
        PatchPCA(128, 8, 65)
    with pytest.raises(ValueError, match="multiple of 8"):
        PatchPCA(128, 8, 4).encode(mels[..., :100])
    with pytest.raises(ValueError, match="patch height 48 must divide"):
        PatchPCA(128, (48, 4), 4)
