"""The processes of one stage: what torchrun (or accelerate) tells each process, the process
group, and the few collectives the stages need around the trainers (a barrier, a broadcast of
a small object, a sum).

torch.distributed does the work; a single process (no launcher) makes every function here a
no-op, so the stages read the same way at any world size. The process group is created once
per process, before any trainer: accelerate and DeepSpeed find it initialised and use it.
Backend "auto" is nccl when every local process has a GPU of its own, else gloo (CPU; or
several processes on one GPU, which NCCL refuses).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

TIMEOUT = timedelta(minutes=60)  # rank 0 may evaluate alone while the others wait


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """True in a process started by a launcher (torchrun or accelerate) for a multi-process
    run. A single process with RANK/WORLD_SIZE=1 set (DeepSpeed's single-process use) is not."""
    return world_size() > 1


def resolve_backend(backend: str) -> str:
    """'auto' -> nccl when each local process can have a GPU of its own, else gloo."""
    if backend != "auto":
        return backend
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))
    return "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= local else "gloo"


def init(backend: str = "auto") -> str | None:
    """Create the process group of a launched run (once); returns its backend (None for a
    single process). On CUDA, process i uses GPU i mod the GPU count."""
    if not launched():
        return None
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_backend()
    backend = resolve_backend(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return backend


def _group():
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _group():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable object)."""
    if not _group():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(value: float) -> float:
    """The sum of ``value`` over all ranks."""
    if not _group():
        return value
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return sum(values)


def finish() -> None:
    """Destroy the process group (each rank, at the end of its stage; no collective)."""
    if _group():
        import torch.distributed as dist

        dist.destroy_process_group()
