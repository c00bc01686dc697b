"""The toy CAVP towers (cinefoley.models.cinetoy.encoders) and the model files (cinefoley.models.model_io)."""

import pytest
import torch

from cinefoley.models.cinetoy.encoders import (ToyAudioEncoder, ToyAudioEncoderConfig, ToyVideoEncoder,
                                    ToyVideoEncoderConfig)
from cinefoley.errors import CheckpointError
from cinefoley.models.model_io import load_model, save_model

SMALL_VIDEO = ToyVideoEncoderConfig(input_size=32, widths=(8, 16, 16, 16))


@pytest.fixture(scope="module")
def clip():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 8, 3, 64, 64), generator=g, dtype=torch.uint8)


def test_video_features_are_per_frame_unit_vectors(clip):
    torch.manual_seed(0)
    out = ToyVideoEncoder().eval()(clip)
    assert out.shape == (2, 8, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 8), atol=1e-5)


def test_video_accepts_uint8_or_float_and_squash_resizes(clip):
    torch.manual_seed(0)
    enc = ToyVideoEncoder(SMALL_VIDEO).eval()
    with torch.no_grad():
        from_uint8 = enc(clip)
        from_float = enc(clip.float() / 255)
        wide = torch.nn.functional.interpolate(clip.flatten(0, 1).float() / 255, size=(48, 96),
                                               mode="bilinear", align_corners=False)
        squashed = enc(wide.unflatten(0, (2, 8)))
    assert torch.allclose(from_uint8, from_float, atol=1e-6)
    assert squashed.shape == (2, 8, 512)
    assert enc.prepare(wide.unflatten(0, (2, 8))).shape == (16, 3, 32, 32)


def test_video_temporal_convs_reach_two_neighbours_only(clip):
    torch.manual_seed(0)
    enc = ToyVideoEncoder(SMALL_VIDEO).eval()
    changed = clip.clone()
    changed[:, 0] = 255 - changed[:, 0]
    with torch.no_grad():
        diff = (enc(clip) - enc(changed)).abs().amax(dim=(0, 2))
    assert (diff[:3] > 1e-4).all()          # frame 0 and, through two (3,1,1) convs, frames 1-2
    assert (diff[3:] == 0).all()            # T is never mixed further


def test_cam_layer_activations_fold_to_clip_layout(clip):
    torch.manual_seed(0)
    enc = ToyVideoEncoder(SMALL_VIDEO)
    seen = {}
    enc.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("act", o))
    enc(clip).sum().backward()
    act = seen["act"]
    assert act.shape == (16, 16, 4, 4) and act.requires_grad
    folded = ToyVideoEncoder.cam_reshape(8)(act)
    assert folded.shape == (2, 16, 8, 4, 4)
    assert torch.equal(folded[1, :, 3], act[8 + 3])


def test_audio_features_are_frame_aligned_unit_vectors():
    torch.manual_seed(0)
    enc = ToyAudioEncoder().eval()
    mel = torch.rand(2, 128, 128)
    with torch.no_grad():
        out = enc(mel)
        later = enc(mel.roll(16, dims=2))     # the sound one video frame (16 mel frames) later
    assert out.shape == (2, 8, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 8), atol=1e-5)
    # away from the zero-padded ends (which also nudge the GroupNorm statistics) features move with the sound
    shifted = (later[:, 2:7] - out[:, 1:6]).abs().max()
    unshifted = (later[:, 2:7] - out[:, 2:7]).abs().max()
    assert shifted < 5e-3 and unshifted > 10 * shifted


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        ToyVideoEncoder(SMALL_VIDEO)(torch.zeros(8, 3, 32, 32))
    with pytest.raises(ValueError, match="16"):
        ToyAudioEncoder()(torch.zeros(1, 128, 100))
    with pytest.raises(ValueError):
        ToyAudioEncoder(ToyAudioEncoderConfig(mel_frames_per_frame=8))


def test_save_load_round_trip(tmp_path, clip):
    torch.manual_seed(0)
    enc = ToyVideoEncoder(SMALL_VIDEO).eval()
    exact = load_model(save_model(enc, tmp_path / "exact.pt", half=False))
    assert isinstance(exact, ToyVideoEncoder) and exact.config == enc.config and not exact.training
    with torch.no_grad():
        assert torch.equal(exact(clip), enc(clip))
        half = load_model(save_model(enc, tmp_path / "half.pt"))
        assert all(p.dtype == torch.float32 for p in half.parameters())
        assert torch.allclose(half(clip), enc(clip), atol=2e-2)
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "exact.pt").stat().st_size


def test_load_names_the_file_and_the_reason(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt: not a readable torch file"):
        load_model(broken)
    path = save_model(ToyAudioEncoder(), tmp_path / "audio.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("head.bias")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing \['head.bias'\]"):
        load_model(path)
    payload["class"] = "os.system"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="not part of cinefoley"):
        load_model(path)
