"""``cinefoley check-checkpoints``: find Diff-Foley's released files and the metric networks' files,
load each with its key-checked loader, and report what loads.

Kept apart from :mod:`cinefoley.models.checkpoints` (which every loader imports) because it imports
every loader.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import import_module
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cinefoley.errors import CheckpointError
from cinefoley.models.checkpoints import METRIC_FILES, RELEASED_FILES, KeyMismatchError, KeyReport

#: kind -> (module, loader); imported when used, so that ``cinefoley --help`` does not load diffusers
LOADERS = {"cavp": ("cinefoley.models.cavp", "load_cavp"), "ldm": ("cinefoley.models.ldm", "load_ldm"),
           "eval_classifier": ("cinefoley.models.align_classifier", "load_align_classifier"),
           "panns": ("cinefoley.models.panns", "load_panns"), "vggish": ("cinefoley.models.vggish", "load_vggish")}




@dataclass
class CheckResult:
    """One checkpoint's line of the check-checkpoints report."""

    kind: str
    path: str
    found: bool
    loads: bool = False
    error: str = ""
    keys: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _load_kind(kind: str, path: Path, options: Mapping) -> KeyReport:
    if kind not in LOADERS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known: {sorted(LOADERS)}")
    module, name = LOADERS[kind]
    return getattr(import_module(module), name)(path, **options).key_report


def check_checkpoints(paths: str | Path | Mapping[str, str | Path | None],
                      options: Mapping[str, Mapping] | None = None) -> list[CheckResult]:
    """Find and load Diff-Foley's checkpoints; never raises for a bad or absent file.

    ``paths`` is a folder (the released file names are looked up in it, then one level below, e.g.
    ``diff_foley_ckpt/``) or ``{kind: path}`` with kinds from :data:`RELEASED_FILES` or :data:`METRIC_FILES`.
    ``options`` gives each kind's loader keywords (e.g. ``{"ldm": {"config": ...}}``); CAVP is checked with its
    audio branch allowed, as the released file holds it.
    """
    options = options or {}
    if isinstance(paths, Mapping):
        wanted = {k: Path(v) for k, v in paths.items() if v is not None}
    else:
        folder = Path(paths)
        wanted = {}
        for kind, name in RELEASED_FILES.items():
            hits = [folder / name] + sorted(folder.glob(f"*/{name}"))
            wanted[kind] = next((p for p in hits if p.is_file()), folder / name)
    results = []
    for kind, path in wanted.items():
        res = CheckResult(kind=kind, path=str(path), found=path.is_file())
        if not res.found:
            res.error = "file not found"
            results.append(res)
            continue
        start = time.time()
        try:
            res.keys = _load_kind(kind, path, options.get(kind, {})).counts()
            res.loads = True
        except CheckpointError as e:
            res.error = str(e)
            if isinstance(e, KeyMismatchError):
                res.keys = e.report.counts()
        res.seconds = round(time.time() - start, 2)
        results.append(res)
    return results


def format_report(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        status = "loads" if r.loads else ("NOT FOUND" if not r.found else "FAILS")
        counts = ", ".join(f"{k} {v}" for k, v in r.keys.items())
        lines.append(f"{r.kind:16s} {status:9s} {r.path}" + (f"  [{counts}]" if counts else "")
                     + (f"  ({r.seconds} s)" if r.found else ""))
        if r.error and r.found:
            lines.append(f"{'':16s} {r.error}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``check-checkpoints [FOLDER] [--cavp P] [--ldm P] [--eval-classifier P] [--panns P] [--vggish P]
    [--json]``.

    Sets ``func`` (``args -> exit code``): 0 when every checkpoint looked for loads, 1 otherwise.
    """
    p = subparsers.add_parser("check-checkpoints", help="check that Diff-Foley's released checkpoints load",
                              description=check_checkpoints.__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="folder holding the released files (e.g. diff_foley_ckpt/)")
    for kind, name in {**RELEASED_FILES, **METRIC_FILES}.items():
        p.add_argument(f"--{kind.replace('_', '-')}", dest=kind, metavar="PATH", help=f"a {name}-format file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_check)
    return p


def _run_check(args: argparse.Namespace) -> int:
    named = {k: getattr(args, k) for k in {**RELEASED_FILES, **METRIC_FILES} if getattr(args, k)}
    if args.folder is None and not named:
        raise SystemExit("check-checkpoints: give a folder or at least one of "
                         "--cavp/--ldm/--eval-classifier/--panns/--vggish")
    results = check_checkpoints(args.folder) if args.folder else []
    if named:
        results = [r for r in results if r.kind not in named] + check_checkpoints(named)
    print(json.dumps([asdict(r) for r in results], indent=2) if args.json else format_report(results))
    return 0 if all(r.loads for r in results) else 1
