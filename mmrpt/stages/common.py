"""Small helpers shared by the stage entry points (not by components)."""

from __future__ import annotations

from pathlib import Path

import torch

from mmrpt import distributed
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.distributed import record_launch, resume_conflict
from mmrpt.io import fingerprint_dir
from mmrpt.training import LoraSpec, TrainOptions


def run_seed(ctx: StageContext) -> int:
    """The training seed of one arm replicate (its seed) under the pipeline seed."""
    return ctx.params.seed + 7919 * ctx.seed


def train_options(ctx: StageContext) -> TrainOptions:
    """The launch section as the trainers take it (this process's run: its world size)."""
    lp = ctx.params.launch
    lora = lp.lora.model_dump()
    precision = lp.precision
    return TrainOptions(
        world_size=distributed.world_size(),
        deepspeed=lp.deepspeed,
        bf16=precision == "bf16" or (precision == "auto" and torch.cuda.is_available()),
        gradient_checkpointing=lp.gradient_checkpointing,
        lora=LoraSpec(**lora) if lora["r"] else None,
        backend=distributed.resolve_backend(lp.backend),
    )


def work_dir(path: Path, fingerprint: str) -> Path:
    """mmrpt.io.fingerprint_dir by the main process (it may empty the folder), then all."""
    if distributed.is_main():
        fingerprint_dir(path, fingerprint)
    distributed.barrier()
    return Path(path)


def checkpoint_dir(ctx: StageContext, options: TrainOptions) -> Path:
    """The stage's resumable checkpoint folder (out ``checkpoints``), checked for a resume at
    this world size (mmrpt.training.resume_conflict)."""
    ckpt = work_dir(ctx.out("checkpoints"), ctx.fingerprint())
    conflict = resume_conflict(ckpt, options.world_size, options.deepspeed)
    if conflict:
        raise ParamsError(conflict)
    record_launch(ckpt, options.world_size, options.deepspeed)
    return ckpt
