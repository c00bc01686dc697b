"""The referees of Table 1: the networks that score generated audio, behind one interface.

An :class:`~cinefoley.metrics.extractors.AudioFeatureExtractor` gives the features FAD (frame
embeddings), FD / KID (clip embeddings) and KL / IS (class logits) are computed on; an alignment
classifier gives Align Acc's p(aligned) of a generated mel against its video's features. CineToy's
stand-ins (:mod:`cinefoley.models.cinetoy.referees`) and the real networks (PANNs Cnn14, VGGish and
Diff-Foley's eval classifier) sit behind the same :class:`Referees`, so the metrics never ask which
world they score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cinefoley.media.audio import mel_spectrogram, shift_mels
from cinefoley.metrics.extractors import AudioFeatureExtractor, FeatureCache
from cinefoley.metrics.scores import align_acc
from cinefoley.models.align_classifier import AlignmentClassifier
from cinefoley.models.panns import Cnn14, load_panns, panns_input
from cinefoley.models.vggish import VGGish, load_vggish, vggish_examples

#: Diff-Foley's Align Acc window: 8.192 s = 512 mel frames and 32 CAVP frames.
ALIGN_MEL_FRAMES = 512
ALIGN_VIDEO_FRAMES = 32


@dataclass
class Referees:
    """``extractor`` for FAD/FD/KID/KL/IS and ``align_prob(mels (n, 128, N), feats (n, T, C)) -> (n,)``."""

    extractor: AudioFeatureExtractor
    align_prob: Callable[[np.ndarray, torch.Tensor], np.ndarray]

    @classmethod
    def real(cls, panns: Cnn14, vggish: VGGish, classifier: AlignmentClassifier, *, cache_dir: str | Path,
             seed: int = 0) -> Referees:
        """PANNs + VGGish (AudioLDM's suite) and Diff-Foley's eval classifier, features cached by content."""
        extractor = FeatureCache(PannsVGGishExtractor(panns, vggish), cache_dir)
        return cls(extractor, lambda mels, feats: align_acc_probs(classifier, np.asarray(mels, np.float32),
                                                                  feats, seed=seed))

    @classmethod
    def cinetoy(cls, audio_classifier: nn.Module, frame_embedder: nn.Module, align_classifier: nn.Module, *,
                cache_dir: str | Path) -> Referees:
        """CineToy's stand-ins (:mod:`cinefoley.models.cinetoy.referees`), features cached by content."""
        extractor = FeatureCache(CineToyExtractor(audio_classifier, frame_embedder,
                                                  weights_digest(audio_classifier, frame_embedder)[:16]), cache_dir)
        return cls(extractor, lambda mels, feats: alignment_probs(align_classifier, mels, feats))


#: The pairs :func:`alignment_checks` shows the alignment classifier: (name, what is moved: None = nothing,
#: n = the video rolled by n frames, "half" = by half the clip, "other" = another clip's video,
#: ("sound", m) = the sound delayed by m mel frames of 16 ms).
ALIGNMENT_CHECKS = (("real sound with its own video: aligned", None),
                    ("sound delayed by 128 ms (half a frame)", ("sound", 8)),
                    ("video shifted by 1 frame (0.25 s)", 1),
                    ("video shifted by 2 frames (0.5 s)", 2),
                    ("video shifted by half the clip", "half"),
                    ("another clip's video", "other"))


def alignment_checks(referees: Referees, mels: np.ndarray, feats: torch.Tensor) -> pd.DataFrame:
    """How the alignment classifier judges real test sound against its own video, time-shifted video
    features and another clip's: per kind of pair, the share it gets right (chance 50 %).

    ``mels`` (n, 128, 16 T) real test mels, ``feats`` (n, T, C) the teacher's features of the same clips.
    A video shift rolls the features in time (circularly); a sound delay moves the mel later, filling the start
    with its room tone (:func:`~cinefoley.media.audio.shift_mels`); "another clip" pairs clip i with clip i + 1.
    Columns: ``referee``, ``check``, ``accuracy``, ``chance``, ``n``.
    """
    if len(mels) < 2:
        raise ValueError("alignment checks need at least 2 clips")
    t = feats.shape[1]
    rows = []
    for name, shift in ALIGNMENT_CHECKS:
        m, f = mels, feats
        if isinstance(shift, tuple):
            m = shift_mels(torch.as_tensor(np.asarray(mels)), torch.full((len(mels),), shift[1])).numpy()
        elif shift == "other":
            f = feats.roll(1, dims=0)
        elif shift is not None:
            f = feats.roll(t // 2 if shift == "half" else shift, dims=1)
        probs = referees.align_prob(m, f)
        called = align_acc(probs)  # called aligned exactly as Align Acc calls them
        rows.append({"referee": "alignment classifier (Align Acc)", "check": name,
                     "accuracy": called if shift is None else 1 - called, "chance": 0.5, "n": len(probs)})
    return pd.DataFrame(rows)


def weights_digest(*modules: nn.Module) -> str:
    """sha256 of the modules' state dicts (names and values): two sets of weights, two digests."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode() + b"\x1f")
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class PannsVGGishExtractor(AudioFeatureExtractor):
    """FD/KID/KL/IS features from PANNs Cnn14, FAD frame features from VGGish (AudioLDM's suite).

    ``clip_embeddings``: (N, 2048) "2048" embeddings; ``logits``: (N, 527) pre-sigmoid logits;
    ``frame_embeddings``: one (n_i, 128) array per clip. Clips are 16-kHz float arrays of any length;
    PANNs runs clips of equal length together in batches of ``batch_size``. ``version`` is a digest
    of both networks' weights, so a :class:`~cinefoley.metrics.FeatureCache` never mixes checkpoints.
    """

    name = "panns-cnn14-16k+vggish"

    def __init__(self, panns: Cnn14, vggish: VGGish, *, device: str | torch.device | None = None,
                 batch_size: int = 16):
        if panns.sample_rate != self.sample_rate:
            raise ValueError(f"the Cnn14 runs at {panns.sample_rate} Hz; this extractor is for {self.sample_rate} Hz")
        self.device = torch.device(device) if device is not None else default_device()
        self.panns = panns.to(self.device).eval()
        self.vggish = vggish.to(self.device).eval()
        self.batch_size = batch_size
        self.version = weights_digest(panns, vggish)[:16]
        self._last: tuple[list[str], np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_files(cls, panns_path: str | Path, vggish_path: str | Path, **kwargs) -> PannsVGGishExtractor:
        """Load ``Cnn14_16k_mAP=0.438.pth`` and ``vggish-10086976.pth`` (key-checked) into an extractor."""
        return cls(load_panns(panns_path), load_vggish(vggish_path), **kwargs)

    @torch.no_grad()
    def _panns(self, wavs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        # clip_embeddings and logits come from one pass: remember the last batch's outputs
        keys = [hashlib.sha256(np.ascontiguousarray(w, dtype="<f4").tobytes()).hexdigest() for w in wavs]
        if self._last is not None and self._last[0] == keys:
            return self._last[1], self._last[2]
        inputs = [panns_input(w) for w in wavs]
        embeddings = np.zeros((len(inputs), self.panns.embed_dim), np.float32)
        logits = np.zeros((len(inputs), self.panns.fc_audioset.out_features), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(x.size, []).append(i)
        for idx in by_length.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s:s + self.batch_size]
                batch = torch.from_numpy(np.stack([inputs[i] for i in chunk])).to(self.device)
                emb, log = self.panns(batch)
                embeddings[chunk], logits[chunk] = emb.float().cpu().numpy(), log.float().cpu().numpy()
        self._last = (keys, embeddings, logits)
        return embeddings, logits

    def clip_embeddings(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self._panns(wavs)[0]

    def logits(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return self._panns(wavs)[1]

    @torch.no_grad()
    def frame_embeddings(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        examples = [vggish_examples(w) for w in wavs]
        if not examples:
            return []
        flat = torch.from_numpy(np.concatenate(examples))[:, None].to(self.device)
        out = torch.cat([self.vggish(flat[s:s + 64 * self.batch_size])
                         for s in range(0, len(flat), 64 * self.batch_size)]).float().cpu().numpy()
        return np.split(out, np.cumsum([len(e) for e in examples])[:-1])


# ----------------------------------------------------------------------------------------------
# Align Acc

@torch.no_grad()
def align_acc_probs(classifier: AlignmentClassifier, mels, video_feats, *, batch_size: int = 16,
                    seed: int = 0) -> np.ndarray:
    """P(aligned) (N,) of generated mels and their videos' CAVP features, as Diff-Foley's align_acc.py.

    ``mels`` (N, 128, ≥ 512) in [0, 1] and ``video_feats`` (N, ≥ 32, C), arrays or tensors: the first
    512 mel frames and 32 feature frames (8.192 s) are scored at t = 0 with a posterior *sample* of
    the classifier's VAE, drawn from one generator seeded with ``seed`` (align_acc.py fixes
    ``torch.manual_seed(0)``). :func:`cinefoley.metrics.align_acc` of the result is Align Acc.
    """
    mels, feats = torch.as_tensor(mels), torch.as_tensor(video_feats)
    if mels.dim() != 3 or mels.shape[-1] < ALIGN_MEL_FRAMES:
        raise ValueError(f"mels must be (N, 128, >= {ALIGN_MEL_FRAMES}), got {tuple(mels.shape)}")
    if feats.dim() != 3 or feats.shape[1] < ALIGN_VIDEO_FRAMES or len(feats) != len(mels):
        raise ValueError(f"video_feats must be (N={len(mels)}, >= {ALIGN_VIDEO_FRAMES}, C), got {tuple(feats.shape)}")
    device = next(classifier.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    probs = [classifier.align_prob(mels[s:s + batch_size, :, :ALIGN_MEL_FRAMES].to(device),
                                   feats[s:s + batch_size, :ALIGN_VIDEO_FRAMES].to(device), generator=generator)
             for s in range(0, len(mels), batch_size)]
    return torch.cat(probs).double().cpu().numpy()


class CineToyExtractor(AudioFeatureExtractor):
    """CineToy's evaluation networks behind the extractor interface (mel front end inside)."""

    name = "cinetoy-evaluators"
    sample_rate = 16000

    def __init__(self, audio_classifier, frame_embedder, version: str, batch_size: int = 64):
        self.audio_classifier = audio_classifier.eval()
        self.frame_embedder = frame_embedder.eval()
        self.version = version
        self.batch_size = batch_size

    def _mels(self, wavs: Sequence[np.ndarray]):
        for i in range(0, len(wavs), self.batch_size):
            chunk = [np.asarray(w, dtype=np.float32) for w in wavs[i:i + self.batch_size]]
            n = min(len(w) for w in chunk)  # a batch shares one length; generated and real differ by < 1 frame
            yield torch.from_numpy(mel_spectrogram(np.stack([w[:n] for w in chunk])))

    @torch.no_grad()
    def clip_embeddings(self, wavs):
        return np.concatenate([self.audio_classifier.embed(m).numpy() for m in self._mels(wavs)])

    @torch.no_grad()
    def logits(self, wavs):
        return np.concatenate([self.audio_classifier(m).numpy() for m in self._mels(wavs)])

    @torch.no_grad()
    def frame_embeddings(self, wavs):
        return [e for m in self._mels(wavs) for e in self.frame_embedder.embed(m).numpy()]


@torch.no_grad()
def alignment_probs(classifier, mels: np.ndarray, feats: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """p(aligned) of generated mels (n, 128, N) against video features (n, T, 512)."""
    classifier.eval()
    out = [torch.sigmoid(classifier(torch.from_numpy(np.asarray(mels[i:i + batch_size], dtype=np.float32)),
                                    feats[i:i + batch_size])).numpy() for i in range(0, len(mels), batch_size)]
    return np.concatenate(out)
