"""The student's way in: JupyterLab from the project's environment, in a real browser.

Debian's Chromium, driven by Playwright, against a JupyterLab server started from this environment (what
``make lab`` starts): notebook 01 runs to the end under the smoke profile with its figures and audio
players in the page, and notebook 07's study widget renders and takes a vote by clicking, which lands
in the study's database. Screenshots are kept under ``runs/browser/`` (a test artifact, not in git).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from notebook_outputs import errors
from playwright.sync_api import expect

from cinefoley.study import VoteStore
from cinefoley.study.serve import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "runs" / "browser"
# the prompts of the notebook in view only: a notebook left open in another tab must not count
PROMPTS_JS = ("() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]"
              ".map(p => p.innerText.trim())")


def smoke_copy(name: str, folder: Path, out_dir: Path) -> Path:
    """The notebook with its parameters cell set to the smoke profile and ``out_dir`` (what a student edits)."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('profile = "demo"', 'profile = "smoke"').replace(
        'out_dir = "../runs/demo"', f'out_dir = "{out_dir}"')
    assert 'profile = "smoke"' in cell.source and str(out_dir) in cell.source
    nbformat.write(nb, folder / name)
    return folder / name


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server of this environment on a free port, serving a folder of notebook copies."""
    root = tmp_path_factory.mktemp("lab")
    SHOTS.mkdir(parents=True, exist_ok=True)
    settings = tmp_path_factory.mktemp("lab_settings")
    # every cell in the page (no windowing), so a figure far down is there to find; no news pop-up
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--ServerApp.root_dir={root}", "--IdentityProvider.token=", "--ServerApp.password=",
                             "--allow-root", "--LabApp.extension_manager=readonly", f"--LabApp.user_settings_dir={settings}",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (root / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
    yield root, url
    proc.terminate()
    proc.wait(30)
    log.close()


def run_all(page, url: str, name: str, timeout_s: float) -> list[str]:
    """Open a notebook in JupyterLab, run every cell from the Run menu, wait until no cell is running (the
    last one done, or one failed and the rest were not run), save it; the cells' prompts."""
    # a workspace of its own, so JupyterLab does not reopen (and run) the notebook an earlier test left open
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset")
    expect(page.locator(".jp-Notebook")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=120_000)  # the kernel is up
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline, still = time.time() + timeout_s, 0
    while True:
        page.wait_for_timeout(2000)
        prompts = page.evaluate(PROMPTS_JS)
        done = all(p != "[ ]:" and "*" not in p for p in prompts)
        stopped = not any("*" in p for p in prompts) and any(p != "[ ]:" for p in prompts)  # after an error
        still = still + 1 if stopped else 0
        if prompts and (done or still >= 5):
            break
        if time.time() > deadline:
            page.screenshot(path=str(SHOTS / f"timeout_{name}.png"), full_page=True)
            raise TimeoutError(f"{name}: cells still running after {timeout_s} s: {prompts}")
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)
    return prompts


def test_notebook_01_runs_to_the_end_with_its_figures_and_players(lab, browser):
    root, url = lab
    path = smoke_copy("01_paired_data.ipynb", root, root / "run")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    prompts = run_all(page, url, path.name, timeout_s=600)
    page.screenshot(path=str(SHOTS / "lab_01_paired_data.png"), full_page=True)
    images = page.locator(".jp-OutputArea-output img")
    assert images.count() >= 4  # the world, the mel, the paired clip, the window statistics
    assert page.locator(".jp-OutputArea-output audio").count() >= 1
    assert page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                         ".every(i => i.naturalWidth > 300)")  # drawn, not broken
    assert not errors(path), errors(path)  # saved from the browser: no cell failed ...
    assert all(p != "[ ]:" for p in prompts)  # ... and every cell ran
    assert (root / "run" / "testsets" / "test_cu.csv").exists()


def test_notebook_07_widget_takes_a_vote_by_clicking(lab, browser):
    root, url = lab
    path = smoke_copy("07_preference_study.ipynb", root, root / "run07")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    prompts = run_all(page, url, path.name, timeout_s=300)
    assert not errors(path) and all(p != "[ ]:" for p in prompts), errors(path)
    play_a = page.get_by_role("button", name="Play A")
    expect(play_a).to_be_visible(timeout=60_000)
    play_a.scroll_into_view_if_needed()
    play_a.click()
    page.get_by_role("button", name="Play B").click()
    vote = page.get_by_role("button", name="A matches better")
    expect(vote).to_be_enabled(timeout=30_000)
    page.screenshot(path=str(SHOTS / "lab_07_study_widget.png"))
    vote.click()
    expect(page.get_by_text("Pair 2 of")).to_be_visible(timeout=30_000)
    with VoteStore(root / "run07" / "study" / "votes.sqlite") as store:
        votes = [v for v in store.votes() if v["participant"] == "notebook-trial"]
    assert len(votes) == 1 and votes[0]["trial"] == 0 and votes[0]["choice"] == "A"
    assert json.loads((root / "run07" / "07_preference_study.json").read_text())["results"]["votes"] > 0
