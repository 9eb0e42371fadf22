"""Several processes, one extraction: rank handling for ``torchrun --nproc_per_node N -m oodbench``.

Under ``torchrun`` every rank runs the same run spec. Feature extraction splits the missing chunks
of each set between the ranks (``shard``); each rank writes its chunks into the shared cache
folder, and after a barrier rank 0 joins them into the very cache entry a single process would
have written. Only rank 0 writes cache entries and result records. The backend is NCCL on GPUs
and gloo on CPU, so two processes on one CPU machine exercise the same path (this is how the tests
check that sharded features equal single-process ones). Without ``torchrun`` (``WORLD_SIZE``
unset or 1) every function here is a no-op for a world of one.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from oodbench.errors import ConfigError

T = TypeVar("T")
TIMEOUT = timedelta(minutes=60)  # one rank may extract a big chunk while the others wait


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on the rank that writes cache entries, records and messages."""
    return rank() == 0


def local_world_size() -> int:
    """Ranks on this machine (they share its CPU cores for loader workers)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def requested_world() -> int:
    """The world size ``torchrun`` asked for (``WORLD_SIZE``), 1 when not launched by it."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def init_from_env(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group if launched by it; returns this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK`` and the NCCL backend; on CPU, gloo.
    """
    if requested_world() <= 1 or not dist.is_available():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) "
                              "visible: use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
        atexit.register(shutdown)
    return device


def shutdown() -> None:
    """Leave the process group (registered at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op for a world of one)."""
    if active():
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a picklable value: an artifact's sha256, a summary), so
    that what rank 0 alone computed (it alone writes files) keys the same cache entries on all."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th one, starting at ``rank``."""
    return list(items[rank()::world_size()])


def balanced_chunk_size(n: int, chunk_size: int, batch_size: int, world: int) -> int:
    """A chunk size giving each of ``world`` ranks about four chunks of a set of ``n`` images.

    It stays a multiple of ``batch_size`` (when ``chunk_size`` is one), so batches, and hence the
    features, are cut exactly as in a single process.
    """
    if world <= 1 or n <= 0:
        return chunk_size
    want = -(-n // (4 * world))
    want = -(-want // batch_size) * batch_size
    return max(batch_size, min(chunk_size, want))
