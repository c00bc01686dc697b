"""What the metrics need from an audio network, and an on-disk cache keyed by audio content.

An :class:`AudioFeatureExtractor` turns 16-kHz mono clips into the three kinds of features the
metrics use: one embedding per clip (PANNs' "2048", for FD/KID), one logit vector per clip (PANNs'
527 classes, for KL/IS) and one embedding per 0.96-s frame (VGGish, for FAD). Concrete extractors
(CineToy's small networks, PANNs/VGGish from local checkpoints) implement it elsewhere.

:class:`FeatureCache` wraps an extractor and stores each clip's features under the sha256 of its
float32 samples and the extractor's name and version. AudioLDM's suite caches by *folder* and
silently reuses stale features when audio is regenerated into the same folder; here new audio
always means new features, and the same audio anywhere is computed once.
"""

from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from cinefoley.utils import atomic_write_bytes

class AudioFeatureExtractor(ABC):
    """Features of a list of 1-D float32 clips at ``sample_rate`` Hz (lengths may differ).

    ``name`` and ``version`` identify the network and its weights: change ``version`` whenever the
    features would change, so cached features are not reused.
    """

    name: str
    version: str
    sample_rate: int = 16000

    @abstractmethod
    def clip_embeddings(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, D)``, one embedding per clip (FD, KID)."""

    @abstractmethod
    def logits(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, K)`` class logits per clip (KL, IS)."""

    @abstractmethod
    def frame_embeddings(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One ``(n_i, D)`` array per clip, a row per 0.96-s frame (FAD)."""


def content_key(wav: np.ndarray, extractor: AudioFeatureExtractor, kind: str) -> str:
    """sha256 of the clip's float32 samples, the extractor's name, version and rate, and the kind."""
    samples = np.ascontiguousarray(wav, dtype="<f4")
    digest = hashlib.sha256()
    for part in (extractor.name, extractor.version, str(extractor.sample_rate), kind, str(samples.shape)):
        digest.update(part.encode() + b"\x1f")
    digest.update(samples.tobytes())
    return digest.hexdigest()


class FeatureCache(AudioFeatureExtractor):
    """An extractor that remembers: features live in ``root/<kind>/<key[:2]>/<key>.npy``.

    Only the clips not found on disk go to the wrapped extractor, in one call per request.
    ``hits`` and ``misses`` count clips looked up since construction.
    """

    def __init__(self, extractor: AudioFeatureExtractor, root: str | Path):
        self.extractor = extractor
        self.root = Path(root)
        self.name, self.version, self.sample_rate = extractor.name, extractor.version, extractor.sample_rate
        self.hits = 0
        self.misses = 0

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.npy"

    def _features(self, kind: str, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        paths = [self._path(kind, content_key(w, self.extractor, kind)) for w in wavs]
        out: list[np.ndarray | None] = [np.load(p) if p.exists() else None for p in paths]
        missing = [i for i, f in enumerate(out) if f is None]
        self.hits += len(wavs) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = getattr(self.extractor, kind)([wavs[i] for i in missing])
            if len(computed) != len(missing):
                raise ValueError(f"{self.name}.{kind} returned {len(computed)} results for {len(missing)} clips")
            for i, features in zip(missing, computed):
                features = np.asarray(features)
                buf = io.BytesIO()
                np.save(buf, features)
                atomic_write_bytes(paths[i], buf.getvalue())
                out[i] = features
        return out

    def clip_embeddings(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(self._features("clip_embeddings", wavs))

    def logits(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(self._features("logits", wavs))

    def frame_embeddings(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._features("frame_embeddings", wavs)
