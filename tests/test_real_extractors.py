"""PANNs Cnn14 / VGGish from their released file formats, their front ends against the definitions, Align Acc."""

import argparse
import json

import librosa
import numpy as np
import pytest
import torch
from diff_foley_files import (CLASSIFIER_SMALL, PANNS_SMALL, VGGISH_SMALL, save_lightning_file,
                              small_classifier, small_panns, small_vggish)

from cinefoley.models.align_classifier import align_classifier_state_dict, load_align_classifier
from cinefoley.errors import CheckpointError
from cinefoley.metrics import FeatureCache, align_acc
from cinefoley.metrics.referees import PannsVGGishExtractor, align_acc_probs
from cinefoley.models.check import check_checkpoints, register
from cinefoley.models.checkpoints import KeyMismatchError
from cinefoley.models.panns import PANNS_16K, Cnn14, load_panns, panns_input
from cinefoley.models.vggish import (VGGish, load_vggish, vggish_example_count, vggish_examples, vggish_frame_count,
                                     vggish_log_mel, vggish_mel_matrix)

SR = 16000


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.randn(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metric_ckpts")
    panns, vggish = small_panns(1), small_vggish(2)
    paths = {"panns": folder / "Cnn14_16k_mAP=0.438.pth", "vggish": folder / "vggish-10086976.pth"}
    torch.save({"model": panns.state_dict()}, paths["panns"])  # PANNs' own layout
    torch.save(vggish.state_dict(), paths["vggish"])  # torchvggish's release: a plain state dict
    return panns, vggish, paths


def test_full_size_layouts_and_output_shapes():
    panns = Cnn14(**PANNS_16K).eval()
    shapes = {k: tuple(v.shape) for k, v in panns.state_dict().items()}
    assert shapes["spectrogram_extractor.stft.conv_real.weight"] == (257, 1, 512)
    assert shapes["spectrogram_extractor.stft.conv_imag.weight"] == (257, 1, 512)
    assert shapes["logmel_extractor.melW"] == (257, 64)
    assert shapes["bn0.running_var"] == (64,)
    assert shapes["conv_block1.conv1.weight"] == (64, 1, 3, 3)
    assert shapes["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    assert shapes["conv_block3.bn2.weight"] == (256,)
    assert shapes["fc1.weight"] == (2048, 2048) and shapes["fc_audioset.weight"] == (527, 2048)
    assert len(shapes) == 3 + 5 + 6 * 12 + 4  # front end, bn0, six blocks (2 convs + 2 BNs), two Linear
    with torch.no_grad():
        embedding, logits = panns(torch.randn(3, 2 * SR))
    assert embedding.shape == (3, 2048) and logits.shape == (3, 527)
    assert (embedding >= 0).all()  # "2048" is post-ReLU

    vggish = VGGish().eval()
    assert {k: tuple(v.shape) for k, v in vggish.state_dict().items() if k.endswith("weight")} == {
        "features.0.weight": (64, 1, 3, 3), "features.3.weight": (128, 64, 3, 3),
        "features.6.weight": (256, 128, 3, 3), "features.8.weight": (256, 256, 3, 3),
        "features.11.weight": (512, 256, 3, 3), "features.13.weight": (512, 512, 3, 3),
        "embeddings.0.weight": (4096, 12288), "embeddings.2.weight": (4096, 4096),
        "embeddings.4.weight": (128, 4096)}
    with torch.no_grad():
        out = vggish(torch.from_numpy(vggish_examples(signal(8.0)))[:, None])
    assert out.shape == (8, 128)
    assert (out < 0).any()  # the last ReLU is gone (AudioLDM's use_activation=False)


def test_panns_log_mel_matches_librosa():
    y = signal(2.3)
    got = Cnn14(**PANNS_SMALL).logmel(torch.from_numpy(y)[None])[0, 0].numpy()
    power = librosa.feature.melspectrogram(y=y.astype(np.float64), sr=SR, n_fft=512, hop_length=160, win_length=512,
                                           window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=64,
                                           fmin=50, fmax=8000, htk=False, norm="slaney")
    expected = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T
    assert got.shape == expected.shape == (1 + y.size // 160, 64)
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


def test_panns_input_is_audioldm_wave_dataset():
    short = signal(0.5) + 0.25
    x = panns_input(short)
    assert x.shape == (32000,) and x.dtype == np.float32
    np.testing.assert_allclose(x[:8000], short - short.mean(), rtol=0, atol=1e-7)
    assert not x[8000:].any()
    long = signal(3.1)
    assert panns_input(long).size == long.size  # no crop
    stereo = np.stack([long, -long])
    np.testing.assert_array_equal(panns_input(stereo), panns_input(long))  # first channel
    with pytest.raises(ValueError, match="non-empty"):
        panns_input(np.zeros(0))


@pytest.mark.parametrize(("seconds", "examples"), [(2.0, 2), (8.0, 8), (10.0, 10), (0.975, 1), (1.5, 1)])
def test_vggish_framing(seconds, examples):
    n = int(round(seconds * SR))
    frames = 1 + (n - 400) // 160
    assert vggish_frame_count(n) == frames == vggish_log_mel(np.zeros(n)).shape[0]
    assert vggish_example_count(n) == examples == 1 + (frames - 96) // 96
    assert vggish_examples(signal(seconds)).shape == (examples, 96, 64)


def test_vggish_examples_are_consecutive_non_overlapping_log_mel_blocks():
    y = signal(3.0)
    log_mel = vggish_log_mel(y)
    ex = vggish_examples(y)
    np.testing.assert_allclose(ex[1], log_mel[96:192], rtol=1e-6)
    assert vggish_example_count(15599) == 0 and vggish_example_count(15600) == 1
    with pytest.raises(ValueError, match="shorter than one 0.96-s VGGish example"):
        vggish_examples(np.zeros(15599))


def test_vggish_stft_is_25ms_periodic_hann_frames_every_10ms():
    y = signal(1.2).astype(np.float64)
    # VGGish zero-pads each 400-sample frame at its end to 512 points; librosa centres the window in
    # 512: the same magnitudes once the signal is shifted by (512 - 400) / 2 samples
    shifted = np.pad(y, 56)
    magnitude = np.abs(librosa.stft(shifted, n_fft=512, hop_length=160, win_length=400, window="hann",
                                    center=False)).T
    expected = np.log(magnitude @ vggish_mel_matrix() + 0.01)
    np.testing.assert_allclose(vggish_log_mel(y), expected, rtol=0, atol=1e-9)


def test_vggish_mel_bands_are_htk_triangles_from_125_to_7500_hz():
    w = vggish_mel_matrix()
    assert w.shape == (257, 64) and not w[0].any()
    hz = np.linspace(0, 8000, 257)
    mel = 1127.0 * np.log(1 + hz / 700.0)
    lo, hi = 1127.0 * np.log(1 + 125 / 700.0), 1127.0 * np.log(1 + 7500 / 700.0)
    centres = np.linspace(lo, hi, 66)[1:-1]
    inside = (mel >= centres[0]) & (mel <= centres[-1])
    np.testing.assert_allclose(w[inside].sum(axis=1), 1.0, atol=1e-12)  # triangles linear in mel tile it
    assert not w[(hz < 125) | (hz > 7500)].any()
    peak_bins = w.argmax(axis=0)
    np.testing.assert_array_equal(peak_bins, np.abs(mel[:, None] - centres).argmin(axis=0))


def test_released_formats_load_and_reproduce(files):
    panns, vggish, paths = files
    loaded = load_panns(paths["panns"], **PANNS_SMALL)
    assert not loaded.training and loaded.key_report.ok
    assert loaded.key_report.used == len(panns.state_dict())
    wav = torch.from_numpy(np.stack([panns_input(signal(2.0, 3)), panns_input(signal(2.0, 4))]))
    with torch.no_grad():
        for got, want in zip(loaded(wav), panns(wav)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)

    loaded_v = load_vggish(paths["vggish"], **VGGISH_SMALL)
    assert loaded_v.key_report.used == len(vggish.state_dict())
    ex = torch.from_numpy(vggish_examples(signal(2.5)))[:, None]
    with torch.no_grad():
        torch.testing.assert_close(loaded_v(ex), vggish(ex), rtol=0, atol=0)


def test_hub_state_dict_with_pca_and_absent_bn_counters_load(tmp_path, files):
    panns, vggish, _ = files
    sd = {**vggish.state_dict(), "pproc.pca_eigen_vectors": torch.zeros(128, 128), "pproc.pca_means": torch.zeros(128)}
    assert load_vggish(sd, **VGGISH_SMALL).key_report.ignored == ["pproc.pca_eigen_vectors", "pproc.pca_means"]
    old = {k: v for k, v in panns.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"iteration": 560000, "model": old}, path)
    assert load_panns(path, **PANNS_SMALL).key_report.ok


def test_broken_files_fail_clearly(tmp_path, files):
    panns, vggish, _ = files
    sd = dict(panns.state_dict())
    del sd["fc1.bias"]
    sd["conv_block2.conv1.weights"] = sd.pop("conv_block2.conv1.weight")  # renamed
    sd["fc_audioset.weight"] = torch.zeros(10, 128)  # mis-shaped
    path = tmp_path / "broken_cnn14.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(KeyMismatchError, match="broken_cnn14.pth: does not match PANNs Cnn14") as err:
        load_panns(path, **PANNS_SMALL)
    report = err.value.report
    assert report.missing == ["conv_block2.conv1.weight", "fc1.bias"]
    assert report.unexpected == ["conv_block2.conv1.weights"]
    assert report.mismatched == [("fc_audioset.weight", (10, 128), (527, 128))]

    sd = dict(vggish.state_dict())
    del sd["embeddings.4.bias"]
    path = tmp_path / "broken_vggish.pth"
    torch.save(sd, path)
    with pytest.raises(KeyMismatchError, match=r"broken_vggish.pth: .*1 missing keys: embeddings.4.bias"):
        load_vggish(path, **VGGISH_SMALL)
    with pytest.raises(KeyMismatchError, match="mis-shaped"):
        load_vggish(vggish.state_dict())  # a small file against the full-size VGGish

    garbage = tmp_path / "Cnn14.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="Cnn14.pth: cannot read checkpoint"):
        load_panns(garbage)
    torch.save({"model": {"fc1.weight": torch.zeros(1), "epoch": 3}}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"mixed.pth: state dict has 1 non-tensor entries"):
        load_panns(tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="absent.pth: file not found"):
        load_panns(tmp_path / "absent.pth")


def test_extractor_features_shapes_and_cache(tmp_path, files):
    panns, vggish, paths = files
    extractor = PannsVGGishExtractor(panns, vggish, device="cpu", batch_size=2)
    wavs = [signal(2.0, 1), signal(4.0, 2), signal(0.6, 3), signal(2.0, 4), signal(2.0, 5)]
    batches = []
    hook = panns.register_forward_hook(lambda module, args, out: batches.append(len(args[0])))
    emb, logits = extractor.clip_embeddings(wavs), extractor.logits(wavs)
    hook.remove()
    assert sorted(batches) == [1, 2, 2]  # one pass for both kinds; 2 s after padding: batched by 2
    assert emb.shape == (5, 128) and logits.shape == (5, 527) and emb.dtype == np.float32
    with torch.no_grad():  # each clip alone, through AudioLDM's input handling, gives the same
        for i, w in enumerate(wavs):
            e, lg = panns(torch.from_numpy(panns_input(w))[None])
            np.testing.assert_allclose(emb[i], e[0].numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(logits[i], lg[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(extractor.clip_embeddings([wavs[0] + 0.3])[0], emb[0], atol=1e-4)  # DC removed
    with pytest.raises(ValueError, match="shorter than one 0.96-s"):  # FAD reads files unpadded
        extractor.frame_embeddings(wavs[:3])
    frames = extractor.frame_embeddings(wavs[:2])
    assert [f.shape for f in frames] == [(2, 128), (4, 128)]
    with torch.no_grad():
        np.testing.assert_allclose(frames[1], vggish(torch.from_numpy(vggish_examples(wavs[1]))[:, None]).numpy(),
                                   rtol=1e-5, atol=1e-6)

    cache = FeatureCache(extractor, tmp_path / "cache")
    first = cache.clip_embeddings(wavs[:2])
    np.testing.assert_allclose(first, emb[:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache.clip_embeddings(wavs[:2]), first)
    assert (cache.hits, cache.misses) == (2, 2)
    other = PannsVGGishExtractor(small_panns(9), vggish, device="cpu")
    assert other.version != extractor.version  # other weights never share cached features


def test_extractor_from_files(files):
    panns, vggish, paths = files
    with pytest.raises(KeyMismatchError):  # the released architecture is the default
        PannsVGGishExtractor.from_files(paths["panns"], paths["vggish"], device="cpu")


def test_align_acc_probs_is_the_eval_classifier_at_t0(tmp_path):
    model = small_classifier(seed=3)
    path = tmp_path / "eval_classifier.ckpt"
    save_lightning_file(align_classifier_state_dict(model), path, epoch=12)
    clf = load_align_classifier(path, CLASSIFIER_SMALL)
    g = torch.Generator().manual_seed(0)
    mels = torch.rand(1, 128, 530, generator=g)  # one clip: the VAE's attention at 128x512 is slow on a CPU
    feats = torch.nn.functional.normalize(torch.randn(1, 40, 8, generator=g), dim=-1)
    probs = align_acc_probs(clf, mels.numpy(), feats.numpy())
    assert probs.shape == (1,) and ((probs > 0) & (probs < 1)).all()
    # the 8.192-s window only, a posterior sample drawn with seed 0
    want = clf.align_prob(mels[:, :, :512], feats[:, :32], generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(probs, want.double().numpy(), rtol=1e-6)
    assert align_acc(probs) == np.mean(probs > 0.5)
    with pytest.raises(ValueError, match=">= 512"):
        align_acc_probs(clf, mels[:, :, :500], feats)
    with pytest.raises(ValueError, match=">= 32"):
        align_acc_probs(clf, mels, feats[:, :20])


def test_check_checkpoints_reports_metric_files(tmp_path, files, capsys):
    _, vggish, paths = files
    sd = dict(vggish.state_dict())
    del sd["features.0.bias"]
    broken = tmp_path / "vggish-10086976.pth"
    torch.save(sd, broken)
    results = {r.kind: r for r in check_checkpoints({"panns": paths["panns"], "vggish": broken},
                                                    options={"panns": PANNS_SMALL, "vggish": VGGISH_SMALL})}
    assert results["panns"].loads and results["panns"].keys["used"] == len(torch.load(paths["panns"])["model"])
    assert not results["vggish"].loads and results["vggish"].keys["missing"] == 1
    assert "features.0.bias" in results["vggish"].error and str(broken) in results["vggish"].error

    parser = argparse.ArgumentParser(prog="cinefoley")
    register(parser.add_subparsers(dest="command"))
    # the released (full-size) architectures do not fit the small files: reported, exit code 1
    args = parser.parse_args(["check-checkpoints", "--panns", str(paths["panns"]), "--vggish", str(paths["vggish"]),
                              "--json"])
    assert args.func(args) == 1
    report = {r["kind"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(report) == {"panns", "vggish"}
    assert all(r["found"] and not r["loads"] and r["keys"]["mismatched"] > 0 for r in report.values())
