"""The main job: execute the numbered notebooks headlessly with papermill, in order.

Executed notebooks land in ``<out>/notebooks/``; each notebook writes its own tables, figures and
run records under ``<out>/``. A failing notebook stops the run (later ones depend on it) and its
executed copy, with the error, is kept for reading.
"""

from __future__ import annotations

import time
from pathlib import Path

from cinefoley.utils import write_run_record

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
    if not found:
        raise FileNotFoundError(f"no notebooks matching {only or '*'} in {NOTEBOOK_DIR}")
    return found


def run_notebooks(profile: str = "demo", out: str | Path = "runs/demo", *, only: list[str] | None = None,
                  extra_parameters: dict | None = None) -> dict[str, float]:
    import papermill as pm

    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.time()
    for nb in notebooks(only):
        t0 = time.time()
        print(f"[cinefoley] running {nb.name} (profile={profile})", flush=True)
        pm.execute_notebook(str(nb), str(out / "notebooks" / nb.name),
                            parameters={"profile": profile, "out_dir": str(out), **(extra_parameters or {})},
                            kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False)
        timings[nb.name] = round(time.time() - t0, 1)
        print(f"[cinefoley] {nb.name} done in {timings[nb.name]} s", flush=True)
    write_run_record(out, config={"profile": profile, "notebooks": [p.name for p in notebooks(only)]},
                     results={"seconds_per_notebook": timings}, name="reproduce.json", started=started)
    return timings
