"""The study's participant page in a real browser: Debian's Chromium, driven by Playwright, against Voilà.

Two participants vote at once, one reloads mid-study, the server is killed and restarted; no recorded
vote is lost, none counts twice, and nothing the page receives names a system. Needs /usr/bin/chromium
(``scripts/install_browser.sh``); Playwright downloads no browser.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from cinefoley.study import VoilaServer, VoteStore, create_study, make_demo_pairs, participant_links
from cinefoley.study.serve import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {"baseline": "SYSBASE-Q7", "ours": "SYSOURS-K9"}
PROGRESS_JS = """() => {
  const text = document.body ? document.body.innerText : "";
  const m = text.match(/Pair (\\d+) of (\\d+)/);
  return m ? Number(m[1]) : (text.includes("Thank you!") ? -1 : 0);
}"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_study")
    pairs = make_demo_pairs(root / "pairs", n_clips=4, seed=1, duration=1.0, size=64)
    return create_study(pairs, root / "study", seed=5, n_catch=1, baseline_name=SYSTEMS["baseline"],
                        ours_name=SYSTEMS["ours"])


@pytest.fixture(scope="module")
def server(study):
    server = VoilaServer(study.folder, port=free_port(), log_path=study.folder.parent / "voila.log").start()
    yield server
    server.stop()
    assert server.process.poll() is not None


class Participant:
    """One person at one browser window; keeps everything the page received, for the blinding check."""

    def __init__(self, browser, server: VoilaServer, pid: str):
        self.pid, self.link = pid, participant_links(server.url, [pid])[pid]
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.received: list[str] = []  # websocket frames, documents, request URLs
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._keep))
        self.page.on("request", lambda r: self.received.append(r.url))
        self.page.on("response", self._keep_document)
        self.choices: dict[int, str] = {}

    def _keep(self, frame) -> None:
        self.received.append(frame.decode("latin-1") if isinstance(frame, bytes) else frame)

    def _keep_document(self, response) -> None:
        if response.request.resource_type in ("document", "xhr", "fetch"):
            try:
                self.received.append(response.body().decode("latin-1"))
            except Exception:  # a response of a page being navigated away has no body any more
                pass

    def open(self, wait: bool = True) -> None:
        self.page.goto(self.link)
        if wait:
            self.wait_loaded()

    def wait_loaded(self) -> int:
        self.page.wait_for_function(PROGRESS_JS, timeout=90_000)
        return self.shown()

    def shown(self) -> int:
        """The pair on screen (1-based), -1 once finished."""
        return self.page.evaluate(PROGRESS_JS)

    def play_both(self) -> None:
        self.page.get_by_role("button", name="Play A").click()
        self.page.get_by_role("button", name="Play B").click()

    def vote(self) -> int:
        """Vote on the pair on screen (after ``play_both``); returns its trial index once the next shows."""
        shown = self.shown()
        choice = "AB"[shown % 2]
        self.page.get_by_role("button", name=f"{choice} matches better").click(timeout=30_000)
        self.page.wait_for_function(f"() => ({PROGRESS_JS})() !== {shown}", timeout=30_000)
        self.choices[shown - 1] = choice
        return shown - 1

    def snapshot(self) -> tuple[str, str]:
        """(the page's HTML, the text a person sees)."""
        return self.page.content(), self.page.evaluate("() => document.body.innerText")


def votes_of(study, pid: str) -> list[dict]:
    with VoteStore(study.db_path) as store:
        return [v for v in store.votes() if v["participant"] == pid]


def assert_blind(study, received: list[str], snapshots: list[tuple[str, str]]) -> None:
    """No system name, option name, source file name or server path in anything the page got or shows."""
    forbidden = [*SYSTEMS.values(), "_baseline", "_ours", "demo-0", str(study.folder), "media/", '"baseline"', '"ours"']
    for text in received + [html for html, _ in snapshots]:
        found = [s for s in forbidden if s.lower() in text.lower()]
        assert not found, f"{found} reached the page: …{text[:200]}…"
    for _, visible in snapshots:
        assert not re.search(r"\b(baseline|ours|diff-foley)\b", visible, flags=re.I), visible


def test_two_participants_at_once_reload_resume_and_server_kill(study, server, browser):
    p1, p2 = Participant(browser, server, "p01"), Participant(browser, server, "p02")
    p1.open(wait=False)
    p2.open(wait=False)  # both pages and kernels start together
    assert p1.wait_loaded() == 1 and p2.wait_loaded() == 1
    for p in (p1, p2):
        p.play_both()
    assert (p1.vote(), p2.vote()) == (0, 0)

    p1.page.reload()  # closed and reopened: resumes at the first unanswered pair
    assert p1.wait_loaded() == 2 and len(votes_of(study, "p01")) == 1
    for p in (p1, p2):
        p.play_both()
    assert (p1.vote(), p2.vote()) == (1, 1)
    snapshots = [p1.snapshot(), p2.snapshot()]

    server.kill()  # Voilà and both kernels die at once
    server.start()
    for p in (p1, p2):
        p.open()
        assert p.shown() == 3 and len(votes_of(study, p.pid)) == 2
    while p1.shown() != -1 or p2.shown() != -1:
        active = [p for p in (p1, p2) if p.shown() != -1]
        for p in active:
            p.play_both()
        for p in active:
            p.vote()
    snapshots += [p1.snapshot(), p2.snapshot()]

    for p in (p1, p2):
        votes = votes_of(study, p.pid)
        plan = study.plan(p.pid)
        assert [v["trial"] for v in votes] == list(range(study.n_trials))  # nothing lost, nothing twice
        assert [v["item"] for v in votes] == [t.item for t in plan]
        assert {v["trial"]: v["choice"] for v in votes} == p.choices  # what was clicked is what was stored
        assert "Thank you!" in p.page.evaluate("() => document.body.innerText")
    assert_blind(study, p1.received + p2.received, snapshots)
    assert any(len(t) > 10_000 for t in p1.received)  # the stimuli did arrive, as message bytes


def test_vote_buttons_open_only_after_both_clips_played(study, server, browser):
    p = Participant(browser, server, "p03")
    p.open()
    a, b = (p.page.get_by_role("button", name=f"{s} matches better") for s in "AB")
    expect(a).to_be_disabled()
    assert p.page.evaluate("() => [...document.querySelectorAll('video')].every(v => v.src.startsWith('blob:'))")
    p.page.get_by_role("button", name="Play A").click()
    expect(p.page.get_by_text("A: played")).to_be_visible(timeout=20_000)
    p.page.wait_for_timeout(500)  # time for the kernel to react, were it to open the vote
    expect(a).to_be_disabled()
    expect(b).to_be_disabled()
    assert votes_of(study, "p03") == []
    p.page.get_by_role("button", name="Play B").click()
    expect(b).to_be_enabled(timeout=20_000)
    assert p.vote() == 0 and len(votes_of(study, "p03")) == 1
    expect(a).to_be_disabled()  # the next pair starts unplayed again
    assert_blind(study, p.received, [p.snapshot()])

    stranger = Participant(browser, server, "p04")
    stranger.page.goto(server.url)  # no id in the link
    expect(stranger.page.get_by_text("no valid participant id")).to_be_visible(timeout=60_000)


def test_load_test_script_small_scale(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study_load_test.py"), "--participants", "3",
                             "--trials", "4", "--kills", "1", "--json", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["lost"], summary["duplicated"], summary["missing"]) == (0, 0, 0)
    assert summary["votes_recorded"] == 12 and summary["server_kills"] == 1
    assert "lost 0, duplicated 0" in result.stdout
