"""CAVP video encoder: the SlowOnly-R50 key layout, loading cavp_epoch66.ckpt-format files, chunking."""

import pytest
import torch
from diff_foley_files import CAVP_SMALL, audio_branch_keys, save_cavp_file, small_cavp

from cinefoley.models.checkpoints import KeyMismatchError
from cinefoley.models.cavp import CAVPVideoEncoder, load_cavp, squash_resize, strip_module_prefix


def test_full_size_layout_is_slowonly_r50_with_mmcv_names():
    with torch.device("meta"):
        sd = CAVPVideoEncoder().state_dict()
    # 53 ConvModules (stem, 16 bottlenecks x 3, 4 downsamples) x 6 tensors + the projection head
    assert len(sd) == 53 * 6 + 2
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["video_encoder.conv1.conv.weight"] == (64, 3, 1, 7, 7)
    assert shapes["video_encoder.layer1.0.conv1.conv.weight"] == (64, 64, 1, 1, 1)
    assert shapes["video_encoder.layer2.3.conv2.conv.weight"] == (128, 128, 1, 3, 3)
    assert shapes["video_encoder.layer3.0.conv1.conv.weight"] == (256, 512, 3, 1, 1)
    assert shapes["video_encoder.layer4.2.conv1.conv.weight"] == (512, 2048, 3, 1, 1)
    assert shapes["video_encoder.layer4.0.downsample.conv.weight"] == (2048, 1024, 1, 1, 1)
    assert shapes["video_project_head.weight"] == (512, 2048)
    assert "video_encoder.layer3.5.conv3.bn.num_batches_tracked" in sd
    assert not any(k.startswith(("video_encoder.pool2", "video_encoder.layer5")) for k in sd)


def test_strides_keep_time_and_reduce_space_32x():
    model = small_cavp()
    with torch.no_grad():
        x = model.video_encoder.maxpool(model.video_encoder.conv1(torch.rand(1, 3, 5, 64, 64)))
        assert x.shape[2:] == (5, 16, 16)
        x = model.video_encoder.layer4(model.video_encoder.layer3(model.video_encoder.layer2(
            model.video_encoder.layer1(x))))
    assert x.shape[1:] == (model.video_encoder.feat_dim, 5, 2, 2)


def test_released_format_loads_and_reproduces_features(tmp_path, caplog):
    source = small_cavp(seed=1)
    path = tmp_path / "cavp_epoch66.ckpt"
    save_cavp_file(source, path)
    with caplog.at_level("INFO", logger="cinefoley"):
        loaded = load_cavp(path, **CAVP_SMALL)  # the obvious call accepts the released layout
    assert "ignored 4 keys of its audio branch (logit_scale, spec_encoder)" in caplog.text
    assert str(path) in caplog.text
    assert not loaded.training
    assert sorted(loaded.key_report.ignored) == sorted(audio_branch_keys())
    assert loaded.key_report.used == len(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    frames = torch.rand(2, 6, 3, 48, 40)
    got = loaded.encode(frames, size=32)
    assert got.shape == (2, 6, 512)
    torch.testing.assert_close(got, source.encode(frames, size=32), rtol=0, atol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2, 6))


def test_audio_branch_is_an_error_when_refused(tmp_path):
    path = tmp_path / "cavp.ckpt"
    save_cavp_file(small_cavp(), path)
    with pytest.raises(KeyMismatchError, match=r"cavp\.ckpt.*4 unexpected keys: logit_scale, spec_encoder"):
        load_cavp(path, allow_audio_branch=False, **CAVP_SMALL)


@pytest.mark.parametrize(("edit", "message"), [
    ("drop", r"1 missing keys: video_encoder\.layer2\.0\.conv2\.bn\.running_var"),
    ("rename", r"missing keys: video_encoder\.conv1\.bn\.weight.*unexpected keys: video_encoder\.conv1\.norm\.weight"),
    ("reshape", r"mis-shaped tensors: video_project_head\.weight: file \[512, 64\] vs model \[512, 128\]"),
])
def test_broken_checkpoints_fail_naming_file_and_keys(tmp_path, edit, message):
    sd = strip_module_prefix(save_cavp_file(small_cavp(), tmp_path / "ok.ckpt", audio_branch=False))
    if edit == "drop":
        del sd["video_encoder.layer2.0.conv2.bn.running_var"]
    elif edit == "rename":
        sd["video_encoder.conv1.norm.weight"] = sd.pop("video_encoder.conv1.bn.weight")
    else:
        sd["video_project_head.weight"] = sd["video_project_head.weight"][:, :64]
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(KeyMismatchError, match=message) as err:
        load_cavp(path, **CAVP_SMALL)
    assert str(path) in str(err.value)


def test_module_prefix_is_stripped_only_at_the_start():
    sd = {"module.video_encoder.a": 1, "video_encoder.b": 2, "video_encoder.module.c": 3}
    assert strip_module_prefix(sd) == {"video_encoder.a": 1, "video_encoder.b": 2, "video_encoder.module.c": 3}


def test_chunks_of_40_frames_like_diff_foley():
    model = small_cavp()
    frames = torch.rand(5, 3, 32, 32)
    chunked = model.encode(frames, chunk=2, size=32)
    by_hand = torch.cat([model(frames[None, s:s + 2]) for s in (0, 2, 4)], dim=1)[0]
    torch.testing.assert_close(chunked, by_hand, rtol=0, atol=0)
    whole = model.encode(frames, chunk=40, size=32)
    # the (3, 1, 1) convolutions of layer3/layer4 see across a boundary only when there is none
    assert (chunked - whole).abs().amax(dim=1)[1:3].min() > 1e-3
    torch.testing.assert_close(whole, model(frames[None])[0])


def test_input_is_squash_resized_and_scaled_to_unit_range():
    model = small_cavp()
    frames = torch.randint(0, 256, (3, 3, 24, 40), dtype=torch.uint8)
    expected = model(torch.nn.functional.interpolate(frames.float() / 255, size=(32, 32), mode="bilinear",
                                                     antialias=True)[None])[0]
    torch.testing.assert_close(model.encode(frames.float() / 255, size=32), expected)
    # uint8 frames are resized in uint8 (as Diff-Foley's PIL resize), so equal up to rounding
    torch.testing.assert_close(model.encode(frames, size=32), expected, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="expected frames"):
        model.encode(torch.rand(3, 24, 40))


@pytest.mark.parametrize("kind", ["close_up", "camera_move"])
@pytest.mark.parametrize("shape,size", [((8, 48, 64), 32), ((4, 64, 48), 224), ((3, 360, 640), 224), ((5, 37, 37), 20)])
def test_varied_input_is_the_recipe_in_one_pass(kind, shape, size):
    from cinefoley.models.cavp import varied_input
    from cinefoley.variations import apply, draw_params

    t, h, w = shape
    gen = torch.Generator().manual_seed(h * w)
    frames = torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=gen)
    params = draw_params(kind, t, h, w, generator=gen)
    want = squash_resize(apply(frames, params), size)
    got = varied_input(frames, params, size)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    diff = (got.int() - want.int()).abs().float()
    assert diff.max() <= 2 and diff.mean() <= 0.5  # uint8 kernels round a little differently
    assert torch.equal(varied_input(frames, None, size), squash_resize(frames, size))
    with pytest.raises(ValueError, match="for_shape"):
        varied_input(frames[:-1], params, size)


def test_a_strided_bottleneck_samples_after_its_3x3_conv():
    """mmaction's 'pytorch' style puts the spatial stride on conv2 (3x3), not on conv1 (1x1): with conv1,
    conv3 as identities and conv2 reading only its top-left tap, out[i, j] = x[2i - 1, 2j - 1]
    (x[2i - 2, 2j - 2] if conv1 sampled first). Both placements give the same keys and shapes."""
    from cinefoley.models.cavp import Bottleneck3d, ConvModule

    block = Bottleneck3d(1, 1, spatial_stride=2, downsample=ConvModule(1, 4, (1, 1, 1), stride=(1, 2, 2), relu=False))
    with torch.no_grad():
        for conv in (block.conv1, block.conv2, block.conv3, block.downsample):
            conv.conv.weight.zero_()
            conv.bn.eps = 0.0
        block.conv1.conv.weight.fill_(1.0)
        block.conv2.conv.weight[0, 0, 0, 0, 0] = 1.0  # top-left tap: output (i, j) reads input (i - 1, j - 1)
        block.conv3.conv.weight.fill_(1.0)
        x = torch.arange(1.0, 37.0).reshape(1, 1, 1, 6, 6)
        out = block.eval()(x)
    expected = torch.zeros(3, 3)
    for i in range(1, 3):
        for j in range(1, 3):
            expected[i, j] = x[0, 0, 0, 2 * i - 1, 2 * j - 1]
    assert out.shape == (1, 4, 1, 3, 3)
    torch.testing.assert_close(out[0, :, 0], expected.expand(4, 3, 3))
