"""Training plumbing shared by every training stage: the HF Trainer for our datasets, resume
from the last complete checkpoint this workspace wrote, and saving a trained model atomically.

transformers' Trainer does the work (checkpointing, resume with optimizer/scheduler/RNG state,
gradient accumulation, DeepSpeed via accelerate); this module supplies the collator, the
resume that really restores Qwen2-VL weights (LoadsCheckpointsByFromPretrained) and the
save that never leaves a half-written model folder. ``train_resumable`` adds the guards
every trainer gets: checkpoint records and resume checks (mmrpt.checkpoints), stop on
divergence and on SIGTERM (mmrpt.guards).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from mmrpt import checkpoints, guards
from mmrpt.modeling.encode import collate
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.progress import interactive
from mmrpt.safety import fresh_dir, replace_dir

log = logging.getLogger(__name__)

if not torch.cuda.is_available():  # DeepSpeed (imported by accelerate) otherwise warns that it
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # "was unable to detect" an accelerator


def quiet_printing(trainer):
    """Off a terminal, the Trainer's own progress printing (a bar, or one dict per log)
    repeats tracking.StepLogger's progress lines: remove it. Returns the trainer."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if not interactive():
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    return trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ResumableTrainer(LoadsCheckpointsByFromPretrained, Trainer):
    """HF Trainer with a resume that restores Qwen2-VL weights (see the mixin)."""


def make_trainer(
    model,
    processor,
    dataset: Dataset,
    *,
    out_dir: str | Path,
    max_steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup_ratio: float,
    save_steps: int,
    save_total_limit: int,
    log_steps: int,
    seed: int,
    callbacks: Sequence[TrainerCallback] = (),
    deepspeed: str | None = None,
    bf16: bool = False,
) -> Trainer:
    """A Trainer over ``dataset`` (items: modeling.encode.Encoded), cosine schedule."""
    pad_id = processor.tokenizer.pad_token_id
    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_ratio,
        lr_scheduler_type="cosine",
        logging_steps=log_steps,
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        seed=seed,
        data_seed=seed,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        deepspeed=deepspeed,
        save_only_model=False,
        activation_checkpointing=False,
    )
    return quiet_printing(
        ResumableTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            data_collator=lambda items: collate(items, pad_id),
            callbacks=list(callbacks),
        )
    )


def train_resumable(trainer, ckpt: Path) -> None:
    """Train, resuming from the last checkpoint in ``ckpt`` that is complete and as this
    workspace wrote it (mmrpt.checkpoints: newer partial or foreign ones are removed unread).

    A last checkpoint at max_steps (the run was killed after training, e.g. during its
    evaluation) is only loaded, weights and state: Trainer.train would run one step past
    max_steps from it, so the rerun would differ from an uninterrupted run.
    """
    from accelerate.utils import broadcast_object_list
    from transformers import TrainerState

    for callback in (
        checkpoints.RecordsCheckpoints,
        guards.StopsOnSignal,
        guards.StopsOnNonFinite,
    ):
        trainer.add_callback(callback)
    # the main process checks (and prunes); every process resumes from what it chose
    last = checkpoints.resume_point(ckpt) if trainer.is_world_process_zero() else None
    choice = [None if last is None else str(last)]
    broadcast_object_list(choice)
    last = choice[0]
    if last:
        log.info("resuming from %s", last)
        state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
        if state.global_step >= trainer.args.max_steps and not trainer.is_deepspeed_enabled:
            trainer._load_from_checkpoint(last)
            trainer.state = state
            return
    with guards.deferred_signals():
        trainer.train(resume_from_checkpoint=last)
    guards.raise_if_terminated()


def last_loss(trainer) -> float:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else float("nan")


def save_model_atomic(model, processor, out: str | Path) -> Path:
    """save_pretrained to a temp folder, then rename: never a half-written model folder.
    Replaces ``out`` only if the project made it (mmrpt.safety)."""
    out = Path(out)
    tmp = fresh_dir(out.with_name(out.name + ".tmp"))
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    return replace_dir(tmp, out)


def save_trained(trainer, processor, out: str | Path) -> Path | None:
    """Save the trained model (gathering ZeRO-3 shards if any) to a temp folder, then rename
    it into place on the main process. Returns the folder on the main process, else None."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if trainer.is_world_process_zero():
        fresh_dir(tmp)
    trainer.save_model(str(tmp))
    if not trainer.is_world_process_zero():
        return None
    processor.save_pretrained(tmp)
    return replace_dir(tmp, out)


class SaveAtSteps(TrainerCallback):
    """Saves the model (and processor) to ``folder/<step>`` after each of ``steps``: the
    snapshots of a budget curve (e.g. accuracy vs SFT steps) from one training run."""

    def __init__(self, steps, folder: str | Path, processor):
        self.steps, self.folder, self.processor = set(steps), Path(folder), processor
        self.folder.mkdir(parents=True, exist_ok=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.is_world_process_zero:
            save_model_atomic(model, self.processor, self.folder / str(state.global_step))
