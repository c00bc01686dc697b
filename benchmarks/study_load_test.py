"""Load test of the preference study at the paper's scale, with the server killed mid-run.

20 participants (Table 2) vote at once, 31 trials each (620 votes), each in its own Chromium context on
the Voilà page, playing both clips before every vote as a person must. Meanwhile the Voilà server and
all participant kernels are SIGKILLed and restarted ``--kills`` times; every participant then reopens
their link and goes on. At the end the vote database is compared with what the pages acknowledged
(a vote counts as acknowledged once the page showed the next pair):

    lost        acknowledged votes missing from the database      (must be 0)
    duplicated  extra rows for a participant × trial or × clip    (must be 0)

Needs Debian's Chromium (``scripts/install_browser.sh``); Playwright downloads no browser.

    python benchmarks/study_load_test.py                       # 20 × 31, two kills
    python benchmarks/study_load_test.py --participants 3 --trials 4 --kills 1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from cinefoley.study import VoilaServer, VoteStore, create_study, make_demo_pairs, participant_ids, participant_links
from cinefoley.study.serve import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  # every participant's page keeps playing and timing as if it were in front
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows"]
PATIENCE_S = 300  # a loaded 2-core machine may take minutes to start 20 kernels at once
PATIENCE_MS = PATIENCE_S * 1000
PROGRESS_JS = """() => {
  const text = document.body ? document.body.innerText : "";
  const m = text.match(/Pair (\\d+) of (\\d+)/);
  return m ? Number(m[1]) : (text.includes("Thank you!") ? -1 : 0);
}"""


class Restarted(Exception):
    """The server was killed while a participant was waiting for it."""


class Run:
    """Shared state: the server, the kill schedule and what the pages acknowledged."""

    def __init__(self, server: VoilaServer, expected: int, kills: int):
        self.server = server
        self.kill_at = [round(expected * (i + 1) / (kills + 1)) for i in range(kills)]
        self.acked: set[tuple[str, int]] = set()
        self.killed = asyncio.Event()  # replaced after every restart
        self.up = asyncio.Event()
        self.up.set()
        self.kills = 0
        self.reloads: dict[str, int] = {}  # why pages were reopened

    async def until(self, awaitable, timeout: float):
        """Await ``awaitable`` unless the server is killed first (then raise ``Restarted``)."""
        task, killed = asyncio.ensure_future(awaitable), asyncio.ensure_future(self.killed.wait())
        done, _ = await asyncio.wait({task, killed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        killed.cancel()
        if task not in done:
            task.cancel()
            raise Restarted() if killed in done else TimeoutError(f"no progress within {timeout:.0f} s")
        return task.result()

    async def killer(self) -> None:
        for target in self.kill_at:
            while len(self.acked) < target:
                await asyncio.sleep(0.05)
            self.up.clear()
            self.killed.set()
            await asyncio.to_thread(self.server.kill)
            self.kills += 1
            await asyncio.to_thread(self.server.start)
            self.killed = asyncio.Event()
            self.up.set()


async def participant(run: Run, browser, pid: str, link: str, k: int) -> None:
    await asyncio.sleep(0.5 * k)  # people do not all click their link in the same instant
    context = await browser.new_context()
    page = await context.new_page()
    try:
        while True:
            await run.up.wait()
            try:
                await run.until(page.goto(link, wait_until="commit", timeout=PATIENCE_MS), PATIENCE_S)
                await run.until(page.wait_for_function(PROGRESS_JS, timeout=PATIENCE_MS), PATIENCE_S)
                while True:
                    shown = await page.evaluate(PROGRESS_JS)
                    if shown == -1:
                        return
                    await run.until(page.get_by_role("button", name="Play A").click(timeout=PATIENCE_MS), PATIENCE_S)
                    await run.until(page.get_by_role("button", name="Play B").click(timeout=PATIENCE_MS), PATIENCE_S)
                    choice = "AB"[(shown + k) % 2]
                    # click() waits until the button is enabled, i.e. until both clips were heard
                    vote = page.get_by_role("button", name=f"{choice} matches better")
                    await run.until(vote.click(timeout=PATIENCE_MS), PATIENCE_S)
                    changed = f"() => ({PROGRESS_JS})() !== {shown}"
                    await run.until(page.wait_for_function(changed, timeout=PATIENCE_MS), PATIENCE_S)
                    run.acked.add((pid, shown - 1))
            except (Restarted, PlaywrightError, TimeoutError) as e:
                # The page is dead (server killed) or stuck: open the link again, as a person would.
                run.reloads[type(e).__name__] = run.reloads.get(type(e).__name__, 0) + 1
                if not isinstance(e, Restarted):
                    print(f"{pid}: reloading after {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                          file=sys.stderr, flush=True)
    finally:
        await context.close()


async def load_test(participants: int, trials: int, kills: int, workdir: Path, clip_seconds: float) -> dict:
    started = time.monotonic()
    pairs = make_demo_pairs(workdir / "pairs", n_clips=trials, seed=0, duration=clip_seconds, size=64)
    study = create_study(pairs, workdir / "study", seed=0)
    ids = participant_ids(participants)
    server = VoilaServer(study.folder, port=free_port(), log_path=workdir / "voila.log")
    links = participant_links(server.url, ids)
    await asyncio.to_thread(server.start)
    run = Run(server, participants * trials, kills)
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            killer = asyncio.ensure_future(run.killer())
            await asyncio.gather(*(participant(run, browser, pid, links[pid], k) for k, pid in enumerate(ids)))
            await killer
            await browser.close()
    finally:
        await asyncio.to_thread(server.stop)
    with VoteStore(study.db_path) as store:
        votes = store.votes()
    rows = {(v["participant"], v["trial"]) for v in votes}
    clips = {(v["participant"], v["item"]) for v in votes}
    return {"participants": participants, "trials_each": trials, "votes_expected": participants * trials,
            "votes_recorded": len(votes), "votes_acknowledged": len(run.acked),
            "lost": len(run.acked - rows), "duplicated": (len(votes) - len(rows)) + (len(votes) - len(clips)),
            "missing": participants * trials - len(clips), "server_kills": run.kills, "page_reloads": sum(run.reloads.values()),
            "reload_reasons": run.reloads,
            "wall_s": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--trials", type=int, default=31)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--clip-seconds", type=float, default=1.0, help="length of each demo clip")
    parser.add_argument("--workdir", help="keep the study and Voilà's log here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="study_load_") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(load_test(args.participants, args.trials, args.kills, workdir, args.clip_seconds))
    print(f"participants {result['participants']} x trials {result['trials_each']} = "
          f"{result['votes_expected']} votes expected")
    print(f"votes recorded {result['votes_recorded']} (acknowledged by the pages {result['votes_acknowledged']})")
    print(f"lost {result['lost']}, duplicated {result['duplicated']}, missing {result['missing']}")
    print(f"server killed and restarted {result['server_kills']} times, page reloads {result['page_reloads']} "
          f"{result['reload_reasons']}, "
          f"wall {result['wall_s']} s")
    if args.json:
        print(json.dumps(result))
    ok = result["lost"] == result["duplicated"] == result["missing"] == 0 and result["server_kills"] == args.kills
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
