"""torchrun: the process group, this process's rank, and its share of the work.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1), a command joins the process group (gloo on CPU, nccl
on CUDA, each rank on the GPU ``LOCAL_RANK``); launched plainly, it is rank 0 of 1 and every helper
here is a no-op. Work that is a list of independent items (clips, shards of clips) is dealt round
robin, rank r taking items r, r + W, …, so each item's result depends on the item alone, never on
the number of ranks; what ranks report is gathered so rank 0 writes one summary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_distributed() -> bool:
    """Join the ``torchrun`` process group (gloo on CPU, nccl on CUDA) unless in one already; whether in one
    (False when not launched by torchrun)."""
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """``(rank, world)`` inside the ``torchrun`` process group, which is left on exit if this call joined it;
    (0, 1) when not launched by torchrun."""
    joined = not dist.is_initialized() and init_distributed()
    try:
        yield rank_world()
    finally:
        if joined:
            dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """This process's rank and the number of ranks; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_device(device: str) -> str:
    """``device`` for this rank: a bare "cuda" under torchrun means this rank's own GPU (``LOCAL_RANK``)."""
    if device == "cuda" and rank_world()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def my_share(items: Sequence[T]) -> list[T]:
    """This rank's items of ``items``: r, r + W, r + 2W, … (all of them outside a process group)."""
    rank, world = rank_world()
    return list(items[rank::world])


def gather(value: T) -> list[T]:
    """``value`` of every rank, in rank order (a collective: every rank must call it); [value] alone."""
    _, world = rank_world()
    if world == 1:
        return [value]
    out: list = [None] * world
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read); no-op alone."""
    if rank_world()[1] > 1:
        dist.barrier()
