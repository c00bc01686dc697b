"""Small helpers every stage shares: seeds, atomic writes and the run record.

Finished work is never lost: every file is written to a temporary name in the same folder and
renamed into place, so a killed process leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stable_hash(*parts: Any, bits: int = 63) -> int:
    """A hash of ``parts`` that is the same on every machine and Python run (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << bits) - 1)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "cinefoley": _version()}
    for name in ("torch", "torchvision", "numpy", "scipy", "diffusers", "librosa", "decord", "av"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "unknown"))
        except Exception:  # a missing optional library is recorded, not fatal
            out[name] = "not installed"
    try:
        import torch

        out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        out["threads"] = str(torch.get_num_threads())
    except Exception:
        pass
    return out


def _version() -> str:
    from cinefoley import __version__

    return __version__


def write_run_record(folder: str | Path, *, config: Any, results: Any = None, name: str = "run.json",
                     started: float | None = None) -> Path:
    """Write ``{config, versions, results, timing}`` as JSON next to a run's outputs."""
    record = {"config": config, "versions": versions(), "results": results,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if started is not None:
        record["seconds"] = round(time.time() - started, 3)
    return atomic_write_json(Path(folder) / name, record)
