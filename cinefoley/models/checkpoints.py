"""Reading Diff-Foley's released checkpoint files and checking that every key is accounted for.

Diff-Foley loads all of its checkpoints with ``load_state_dict(strict=False)``, so a file with missing,
renamed or extra weights loads silently and generates noise. Here every loader compares the file's keys
(and shapes) with the model it builds and raises :class:`KeyMismatchError` (a
:class:`~cinefoley.errors.CheckpointError` naming the file) that lists what does not match.

The files this package reads (``diff_foley_ckpt/`` of the HF repo ``SimianLuo/Diff-Foley``):

- ``cavp_epoch66.ckpt``: CAVP (Stage 1), OpenCLIP-style with DDP's ``module.`` prefix;
  :func:`cinefoley.models.cavp.load_cavp`.
- ``ldm_epoch240.ckpt``: the LDM (Stage 2), a Lightning ``state_dict``; :func:`cinefoley.models.ldm.load_ldm`.
- ``eval_classifier.ckpt``: the Align-Acc classifier, Lightning;
  :func:`cinefoley.models.align_classifier.load_align_classifier`.

The metric networks' files (:data:`METRIC_FILES`, :mod:`cinefoley.metrics.referees`) are checked
when named (``--panns``, ``--vggish``).

``cinefoley check-checkpoints`` (:mod:`cinefoley.models.check`) reports, for a folder or for named files,
what was found and whether each one loads.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cinefoley.errors import CheckpointError

#: The released file names and the kind of model each holds.
RELEASED_FILES = {
    "cavp": "cavp_epoch66.ckpt",
    "ldm": "ldm_epoch240.ckpt",
    "eval_classifier": "eval_classifier.ckpt",
}

#: The evaluation networks' files (AudioLDM's FD/KID/KL/IS and FAD extractors), checked only when named.
METRIC_FILES = {
    "panns": "Cnn14_16k_mAP=0.438.pth",
    "vggish": "vggish-10086976.pth",
}

StateDictSource = str | Path | Mapping[str, torch.Tensor]


def source_name(source: StateDictSource) -> str:
    """The file name used in error messages (``<state dict>`` for an in-memory dict)."""
    return str(source) if isinstance(source, (str, Path)) else "<state dict>"


def load_source(source: "StateDictSource"):
    """The unpickled object of a checkpoint path, or ``source`` itself when it is already a mapping."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    return _load_file(path)


def read_state_dict(source: StateDictSource) -> dict[str, torch.Tensor]:
    """The flat ``{key: tensor}`` of a checkpoint file (``.ckpt``/``.pt``/``.pth`` or ``.safetensors``).

    A ``{"state_dict": ...}`` wrapper (Lightning, OpenCLIP) is unwrapped. Pickles are first read with
    ``weights_only=True``; the released Lightning files also pickle hyper-parameters, which that refuses
    (the diffusers ``from_single_file`` pitfall), so they are then read in full: only load files you trust.
    """
    obj = load_source(source)
    name = source_name(source)
    while isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(name, f"holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k in obj if k not in tensors)
    if not tensors:
        raise CheckpointError(name, "holds no tensors")
    if others:
        raise CheckpointError(name, f"state dict has {len(others)} non-tensor entries: {others[:5]}")
    return dict(tensors)


def _load_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(path, f"cannot read safetensors: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # non-tensor objects in the pickle (Lightning hyper-parameters): read it in full below
    except Exception as e:
        raise CheckpointError(path, f"cannot read checkpoint: {e}") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(path, f"cannot read checkpoint: {e}") from e


@dataclass
class KeyReport:
    """How a checkpoint's keys match a model's: what is missing, unexpected, mis-shaped or ignored on purpose."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    used: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def merge(self, other: KeyReport) -> KeyReport:
        return KeyReport(self.missing + other.missing, self.unexpected + other.unexpected,
                         self.mismatched + other.mismatched, self.ignored + other.ignored, self.used + other.used)

    def describe(self, limit: int = 20) -> str:
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                parts.append(f"{len(items)} {title} keys: {shown}")
        if self.mismatched:
            shown = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} mis-shaped tensors: {shown}")
        return " | ".join(parts) if parts else "all keys match"

    def counts(self) -> dict[str, int]:
        return {"used": self.used, "missing": len(self.missing), "unexpected": len(self.unexpected),
                "mismatched": len(self.mismatched), "ignored": len(self.ignored)}


class KeyMismatchError(CheckpointError):
    """A checkpoint whose keys or shapes do not match the model; ``.report`` is the :class:`KeyReport`."""

    def __init__(self, path: str | Path, what: str, report: KeyReport):
        self.report = report
        super().__init__(path, f"does not match {what}: {report.describe()}")


def compare_keys(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | None], *,
                 ignore_prefixes: tuple[str, ...] = ()) -> KeyReport:
    """Compare a state dict with the expected ``{key: shape}`` (``None``: shape checked elsewhere)."""
    ignored = sorted(k for k in found if k not in expected and k.startswith(ignore_prefixes))
    report = KeyReport(missing=sorted(set(expected) - set(found)),
                       unexpected=sorted(set(found) - set(expected) - set(ignored)), ignored=ignored)
    for key, shape in expected.items():
        if key in found and shape is not None and tuple(found[key].shape) != tuple(shape):
            report.mismatched.append((key, tuple(found[key].shape), tuple(shape)))
    report.used = len(set(found) & set(expected))
    return report


def require(report: KeyReport, source: StateDictSource, what: str) -> None:
    """Raise :class:`KeyMismatchError` unless every key matched."""
    if not report.ok:
        raise KeyMismatchError(source_name(source), what, report)
