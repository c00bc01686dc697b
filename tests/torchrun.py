"""Launch ``cinefoley`` commands under torchrun from the tests: gloo ranks on this machine's CPUs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cli(argv: list[str], *, nodes: int = 1, per_node: int = 2, timeout: float = 120) -> str:
    """Run ``cinefoley <argv>`` as ``nodes`` torchrun launchers of ``per_node`` ranks each, meeting at one
    c10d rendezvous (several launchers stand in for several nodes); their output. Fails the test on a
    non-zero exit, or when the ranks have not finished within ``timeout`` seconds (a hang)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc_per_node", str(per_node),
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "test",
           "-m", "cinefoley.cli", *argv]
    launchers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(nodes)]
    outputs = []
    try:
        for p in launchers:
            outputs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun {' '.join(argv[:2])} did not finish in {timeout} s (a rank hangs?)")
    finally:
        for p in launchers:
            if p.poll() is None:
                p.terminate()  # torchrun passes it on to its ranks (they run in sessions of their own)
                p.wait(30)
    for p, out in zip(launchers, outputs):
        assert p.returncode == 0, f"torchrun exited {p.returncode}:\n{out[-4000:]}"
    return "\n".join(outputs)


@contextmanager
def one_thread():
    """This process computes on one thread, as each rank does (torchrun's OMP_NUM_THREADS=1): then the same
    arithmetic as the ranks, to the bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
