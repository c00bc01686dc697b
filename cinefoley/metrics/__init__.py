"""Evaluation metrics (AudioLDM's suite + Diff-Foley's Align Acc), bootstrap intervals, feature extractors."""

from cinefoley.metrics.bootstrap import Interval, bootstrap_ci, paired_bootstrap_diff, resampled_indices
from cinefoley.metrics.extractors import AudioFeatureExtractor, FeatureCache, content_key
from cinefoley.metrics.scores import (align_acc, fad, fd, frechet_distance, gaussian_stats, inception_score, kid,
                                      kl)

__all__ = [
    "AudioFeatureExtractor", "FeatureCache", "Interval", "align_acc", "bootstrap_ci", "content_key", "fad", "fd",
    "frechet_distance", "gaussian_stats", "inception_score", "kid", "kl", "paired_bootstrap_diff",
    "resampled_indices",
]
