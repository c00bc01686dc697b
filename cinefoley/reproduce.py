"""The main job: execute the numbered notebooks headlessly with papermill, in order, and say what happens.

Executed notebooks land in ``<out>/notebooks/`` and an HTML copy of each in ``<out>/html/`` (for reading
without Jupyter); each notebook writes its own tables, figures and run records under ``<out>/``. The
terminal shows one block per notebook: its title, a bar for every long step inside it (relayed from the
kernel, :mod:`cinefoley.progress`) and its time; at the end Table 1 with the paired differences and
where everything is. A failing notebook stops the run (later ones depend on it); its executed copy, with
the error, is kept for reading.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import nbformat

from cinefoley.progress import ProgressRelay
from cinefoley.utils import write_run_record

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: the kernel's own log (e.g. "running over TCP without encryption" on a local kernel) is not for the reader
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {only or '*'} in {NOTEBOOK_DIR}")
    return found


def title(path: Path) -> str:
    """The notebook's first heading, e.g. ``03 · Self-distillation``."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.startswith("#"):
            return cell.source.splitlines()[0].lstrip("# ").strip()
    return path.stem


def export_html(notebook: Path, html: Path) -> Path:
    """An HTML copy of an executed notebook (figures, tables and players embedded)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(body, encoding="utf-8")
    return html


def run_notebooks(profile: str = "demo", out: str | Path = "runs/demo", *, only: list[str] | None = None,
                  extra_parameters: dict | None = None, echo: bool = False) -> dict[str, float]:
    """Execute the notebooks in order into ``out``; seconds per notebook. ``echo`` tells the terminal."""
    import papermill as pm

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    say = print if echo else (lambda *a, **k: None)
    selected = notebooks(only)
    timings: dict[str, float] = {}
    started = time.time()
    for i, nb in enumerate(selected, 1):
        say(f"[{i}/{len(selected)}] {title(nb)}  ({nb.name}, profile={profile})", flush=True)
        executed = out / "notebooks" / nb.name
        t0 = time.time()
        relay = ProgressRelay(out / ".progress.jsonl") if echo else nullcontext()
        try:
            with relay:
                pm.execute_notebook(str(nb), str(executed), kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                                    parameters={"profile": profile, "out_dir": str(out), **(extra_parameters or {})},
                                    progress_bar=False, extra_arguments=KERNEL_ARGUMENTS)
        except Exception:
            say(f"      FAILED after {time.time() - t0:.0f} s; the executed notebook, with the error: {executed}",
                file=sys.stderr)
            raise
        finally:
            if executed.exists():
                export_html(executed, out / "html" / f"{nb.stem}.html")
        timings[nb.name] = round(time.time() - t0, 1)
        say(f"      done in {timings[nb.name]:.0f} s", flush=True)
    write_run_record(out, config={"profile": profile, "notebooks": [p.name for p in selected],
                                  "parameters": extra_parameters or {}},
                     results={"seconds_per_notebook": timings}, name="reproduce.json", started=started)
    say(summary(out, total_s=time.time() - started))
    return timings


def summary(out: Path, *, total_s: float | None = None) -> str:
    """Table 1 with the paired differences, and where the run's files are."""
    import pandas as pd

    from cinefoley.metrics.evaluate import METRICS

    lines = ["", f"Finished{f' in {total_s / 60:.1f} min' if total_s else ''}. Everything is in {out}/"]
    if (out / "table1.csv").exists():
        table = pd.read_csv(out / "table1.csv").set_index(["test_set", "system"])[list(METRICS)]
        lines += ["", "Table 1 (lower is better for FAD, FD, KID (1e-3), KL; higher for IS, Align Acc %):",
                  table.to_string(float_format=lambda v: f"{v:9.2f}")]
    if (out / "table1_paired_diff.csv").exists():
        diff = pd.read_csv(out / "table1_paired_diff.csv").set_index("test_set")
        cells = {m: [f"{r[m]:+.2f} [{r[f'{m}_lo']:+.2f}, {r[f'{m}_hi']:+.2f}]" for _, r in diff.iterrows()]
                 for m in METRICS}
        lines += ["", "ours - baseline, paired bootstrap 95 % interval:",
                  pd.DataFrame(cells, index=diff.index).to_string()]
    where = [("tables", "table1.csv, table1_paired_diff.csv, table3.csv, table4.csv, figure5_*.csv, tables/"),
             ("figures", "figures/*.png"), ("executed notebooks", "notebooks/*.ipynb"),
             ("the same, readable without Jupyter", "html/*.html"), ("run records", "*.json")]
    lines += [""] + [f"  {what:36s} {out.name}/{files}" for what, files in where]
    return "\n".join(lines)
