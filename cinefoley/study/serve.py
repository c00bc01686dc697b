"""Serve a study to participants as a web page (Voilà), and print their links.

Voilà runs ``participant.ipynb`` in a fresh kernel for every visitor, shows only the widget (sources
stripped, no tracebacks) and serves no files from the notebook's folder. Stimuli travel as bytes in
widget messages, so the page never sees a file name, path or URL that could name a system.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from cinefoley.study.app import STUDY_ENV
from cinefoley.study.design import Study, check_participant_id, participant_ids

PARTICIPANT_NOTEBOOK = Path(__file__).with_name("participant.ipynb")


def participant_links(base_url: str, participants: list[str]) -> dict[str, str]:
    """``{id: link}``: the link each participant opens (``<base_url>?pid=<id>``)."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return {p: f"{base}?pid={check_participant_id(p)}" for p in participants}


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class VoilaServer:
    """One Voilà process serving a study's participant page; ``kill`` simulates a crash."""

    def __init__(self, study_dir: str | Path, *, ip: str = "127.0.0.1", port: int = 8866,
                 log_path: str | Path | None = None, idle_timeout_s: int = 3600):
        self.study_dir = Path(study_dir).resolve()
        Study.load(self.study_dir)  # fail here, not in every participant's kernel
        self.ip, self.port, self.idle_timeout_s = ip, port, idle_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.ip in ("0.0.0.0", "::") else self.ip
        return f"http://{host}:{self.port}/"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "voila", str(PARTICIPANT_NOTEBOOK), "--no-browser",
                f"--port={self.port}", f"--Voila.ip={self.ip}", "--strip_sources=True",
                "--show_tracebacks=False", "--theme=light",
                "--VoilaConfiguration.file_allowlist=[]",  # no static files next to the notebook
                # A participant who walks away frees their kernel; reopening the link resumes.
                f"--MappingKernelManager.cull_idle_timeout={self.idle_timeout_s}",
                "--MappingKernelManager.cull_interval=60"]

    def start(self, timeout: float = 120.0) -> "VoilaServer":
        """Start Voilà and wait until it answers."""
        env = {**os.environ, STUDY_ENV: str(self.study_dir)}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if self.log_path:
                log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"Voilà exited with code {self.process.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Voilà did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL Voilà and every participant kernel at once, as a crash would."""
        self._signal_tree(signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down cleanly (SIGTERM), then kill whatever is left."""
        self._signal_tree(signal.SIGTERM, timeout)
        self._signal_tree(signal.SIGKILL)

    def _signal_tree(self, sig: int, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            procs = [psutil.Process(self.process.pid)]
            procs += procs[0].children(recursive=True)  # kernels run in their own sessions
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=timeout)
        if self.process.poll() is None and sig == signal.SIGKILL:
            self.process.wait(timeout)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.port}/api/status", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except OSError:
            return False

    def __enter__(self) -> "VoilaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_study(study_dir: str | Path, *, ip: str = "127.0.0.1", port: int = 8866,
                participants: int | list[str] = 20, public_url: str | None = None,
                log_path: str | Path | None = None) -> int:
    """Serve the study until interrupted (Ctrl-C or SIGTERM), after printing one link per participant.

    ``public_url`` is the address participants reach the server at (e.g. behind a reverse proxy);
    by default the server's own ``http://ip:port/``. Call from the main thread (it handles SIGTERM).
    Returns Voilà's exit code (0 after an interruption).
    """
    ids = participant_ids(participants) if isinstance(participants, int) else list(participants)
    server = VoilaServer(study_dir, ip=ip, port=port, log_path=log_path)
    links = participant_links(public_url or server.url, ids)  # bad ids fail before anything starts
    server.start()
    print(f"Study {Study.load(study_dir).name!r} served at {server.url} (Ctrl-C to stop)")
    for pid, link in links.items():
        print(f"{pid}\t{link}")
    sys.stdout.flush()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops Voilà too, not only Ctrl-C
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
