"""One small file per trained CineToy model: its class, its config and its weights.

``save_model`` stores ``{format, class, config, state_dict}`` (weights in fp16 by default, so the
teacher, generator and evaluators ship in a few MB); ``load_model`` rebuilds the model from its config,
checks that every key and shape matches, and restores fp32. Files are read with
``torch.load(weights_only=True)`` and only classes inside ``cinefoley`` are rebuilt.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from cinefoley.errors import CheckpointError
from cinefoley.utils import atomic_torch_save

FORMAT = "cinefoley-model/1"


def save_model(model: nn.Module, path: str | Path, *, half: bool = True) -> Path:
    """Write ``model`` (which has a dataclass ``config`` and a ``config_class``) to ``path`` atomically."""
    cls = type(model)
    state = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "class": f"{cls.__module__}.{cls.__qualname__}",
               "config": asdict(model.config), "state_dict": state}
    return atomic_torch_save(payload, path)


def _model_class(path: Path, name: str) -> type[nn.Module]:
    module, _, qualname = name.rpartition(".")
    if not module.startswith("cinefoley."):
        raise CheckpointError(path, f"model class {name!r} is not part of cinefoley")
    try:
        return getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(path, f"model class {name!r} not found ({err})") from err


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model`, in fp32 and eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and why
        raise CheckpointError(path, f"not a readable torch file ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(path, f"not a {FORMAT} file")
    cls = _model_class(path, payload["class"])
    model = cls(cls.config_class(**payload["config"]))
    expected = model.state_dict()
    stored = payload["state_dict"]
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = sorted(k for k in set(expected) & set(stored) if expected[k].shape != stored[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(path, f"weights do not match {payload['class']}: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in stored.items()})
    return model.to(map_location).eval()
