"""The one launcher of multi-process stages: `python -m mmrpt <stage> ...` re-executes itself
under torchrun (or accelerate) when launch.num_processes > 1.

So dvc.yaml's commands, the Prefect flow (which runs them through `dvc repro`) and a user at
the shell all start N processes the same way, from params alone:

    python -m mmrpt rl --arm mmrpt --seed 0 -S launch.num_processes=8 \\
        -S launch.deepspeed=mmrpt/deepspeed/zero3.json
    # runs: python -m torch.distributed.run --standalone --nproc_per_node 8 -m mmrpt rl ...

torchrun --standalone picks a free rendezvous port, so several stages can run at once on one
machine. accelerate is for GPUs only: `accelerate launch --cpu --num_processes 2` starts ONE
process. A run started by hand under torchrun is not relaunched; its world size must equal
launch.num_processes (the batch arithmetic and the resume check read that param).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from mmrpt import distributed
from mmrpt.config import LaunchParams, ParamsError

log = logging.getLogger(__name__)


def needs_relaunch(launch: LaunchParams) -> bool:
    return launch.num_processes > 1 and not distributed.launched()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(launch: LaunchParams, argv: list[str]) -> list[str]:
    """The launcher command line that runs `python -m mmrpt <argv>` in
    launch.num_processes processes on this machine."""
    n = str(launch.num_processes)
    if launch.launcher == "torchrun":
        run = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n]
        return [sys.executable, *run, "-m", "mmrpt", *argv]
    acc = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", n]
    acc += ["--num_machines", "1", "--main_process_port", str(free_port())]
    acc += ["--mixed_precision", "no"]
    acc += ["--dynamo_backend", "no"]
    return [sys.executable, *acc, "--module", "mmrpt", *argv]


def check_launcher(launch: LaunchParams) -> None:
    if launch.launcher == "accelerate":
        import torch

        if not torch.cuda.is_available():
            raise ParamsError(
                "launch.launcher=accelerate needs CUDA GPUs (`accelerate launch --cpu` runs "
                "a single process whatever --num_processes says): use launch.launcher=torchrun"
            )


def relaunch(launch: LaunchParams, argv: list[str]) -> int:
    """Run this command line again under the launcher; returns the launcher's exit code."""
    check_launcher(launch)
    cmd = command(launch, argv)
    log.info("launching %d processes: %s", launch.num_processes, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def single_process_env(launch: LaunchParams) -> None:
    """DeepSpeed in one process reads the launcher's variables (else it looks for MPI): set
    them for a run of one process on this machine, unless they are set."""
    if launch.deepspeed and "RANK" not in os.environ:
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )


def check_world(launch: LaunchParams) -> None:
    """A stage's process must belong to a run of exactly launch.num_processes processes
    (one, without a launcher)."""
    n = distributed.world_size()
    if n != launch.num_processes:
        raise ParamsError(
            f"this process is one of WORLD_SIZE={n} processes but launch.num_processes="
            f"{launch.num_processes}: set -S launch.num_processes={n} (batch params are "
            "global batches split over the processes)"
        )


def preflight(ctx) -> None:
    """Before launching processes: refuse checkpoints they could not resume (one clear
    message here, not one per process from inside the launcher). ``ctx``: the stage's
    mmrpt.contract.StageContext."""
    if "checkpoints" not in ctx.stage.outs:
        return
    ckpt = ctx.out("checkpoints")
    stamp = ckpt / "fingerprint.txt"
    if stamp.exists() and stamp.read_text().strip() == ctx.fingerprint():
        lp = ctx.params.launch
        conflict = distributed.resume_conflict(ckpt, lp.num_processes, lp.deepspeed)
        if conflict:
            raise ParamsError(conflict)
