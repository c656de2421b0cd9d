"""The processes of one stage: what torchrun (or accelerate) tells each process, the process
group, and the few collectives the stages need around the trainers (a barrier, a broadcast of
a small object, a sum).

torch.distributed does the work; a single process (no launcher) makes every function here a
no-op, so the stages read the same way at any world size. The process group is created once
per process, before any trainer: accelerate and DeepSpeed find it initialised and use it.
Backend "auto" is nccl when every local process has a GPU of its own, else gloo (CPU; or
several processes on one GPU, which NCCL refuses). Beside a stage's checkpoints, launch.json
records the world size that wrote them: DeepSpeed checkpoints resume at that size only.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
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


def _group() -> bool:
    """A process group exists. Without torch.distributed imported there can be none: a stage
    that never needs torch (data, mask, report) is spared its ~3 s import at every barrier."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


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


LAUNCH_RECORD = "launch.json"


def resume_conflict(ckpt: Path, world_size: int, deepspeed: str | None) -> str | None:
    """Why the checkpoints in ``ckpt`` cannot be resumed by ``world_size`` processes, or None.
    DeepSpeed checkpoints need the world size that wrote them (ZeRO partitions the optimizer
    state per process); plain checkpoints hold it whole and resume at any world size."""
    record = ckpt / LAUNCH_RECORD
    if not (deepspeed and record.exists() and any(ckpt.glob("checkpoint-*"))):
        return None
    n = json.loads(record.read_text()).get("world_size")
    if n == world_size:
        return None
    return (
        f"{ckpt} holds DeepSpeed checkpoints written by {n} process(es): "
        f"launch.num_processes={world_size} cannot resume them (ZeRO partitions the "
        f"optimizer state per process). Resume with -S launch.num_processes={n}, or delete "
        f"{ckpt} to start over."
    )


def record_launch(ckpt: Path, world_size: int, deepspeed: str | None) -> None:
    """Note beside the checkpoints which launch writes them (main process)."""
    if is_main():
        record = {"world_size": world_size, "deepspeed": deepspeed}
        (ckpt / LAUNCH_RECORD).write_text(json.dumps(record) + "\n")
