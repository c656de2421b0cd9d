"""Training plumbing shared by every training stage: the HF Trainer for our datasets, how a
trainer runs (TrainOptions: processes, DeepSpeed, bf16, gradient checkpointing, LoRA), resume
from the last complete checkpoint this workspace wrote, and saving a trained model atomically.

transformers' Trainer does the work (checkpointing, resume with optimizer/scheduler/RNG state,
gradient accumulation, DDP and DeepSpeed via accelerate, LoRA via peft); this module supplies
the collator, the resume that really restores Qwen2-VL weights
(LoadsCheckpointsByFromPretrained), the save that never leaves a half-written model folder
(gathering ZeRO-3 shards, merging LoRA adapters), and a count of the rows each optimizer step
trained on over all processes (CountsRows). Batch sizes given here are GLOBAL: each of
``world_size`` processes takes batch / world_size. ``train_resumable`` adds the guards every
trainer gets: checkpoint records and resume checks (mmrpt.checkpoints), stop on divergence and
on SIGTERM (mmrpt.guards).
"""

from __future__ import annotations

import gc
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState

from mmrpt import checkpoints, distributed, guards, signals
from mmrpt.modeling.encode import collate
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained, load_vlm, settle_tokenizer
from mmrpt.progress import interactive
from mmrpt.safety import fresh_dir, replace_dir

log = logging.getLogger(__name__)

if not torch.cuda.is_available():  # DeepSpeed (imported by accelerate) otherwise warns that it
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # "was unable to detect" an accelerator


def quiet_printing(trainer):
    """Off a terminal, the Trainer's own progress printing (a bar, or one dict per log)
    repeats mmrpt.stages.step_logger.StepLogger's progress lines: remove it. Returns the trainer."""
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


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass(frozen=True)
class TrainOptions:
    """How a trainer runs, the same for every training stage (params: launch)."""

    world_size: int = 1  # processes of the run; batches are split over them
    deepspeed: str | None = None  # a DeepSpeed config file (ZeRO-2, ZeRO-3)
    bf16: bool = False  # bf16 mixed precision
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None  # LoRA adapters instead of full fine-tuning
    backend: str | None = None  # the process group's backend (world_size > 1)
    extra: dict = field(default_factory=dict)  # more TrainingArguments (tests, benches)

    def training_args(self) -> dict:
        """The TrainingArguments (or TRL config) fields these options set."""
        gc_kwargs = {"use_reentrant": False} if self.gradient_checkpointing else None
        return {
            "use_cpu": not torch.cuda.is_available(),
            "bf16": self.bf16,
            "deepspeed": self.deepspeed,
            "activation_checkpointing": self.gradient_checkpointing,
            "activation_checkpointing_kwargs": gc_kwargs,
            "ddp_backend": self.backend if self.world_size > 1 else None,
            **self.extra,
        }


ONE_PROCESS = TrainOptions()  # the defaults: one process, fp32, full fine-tuning


def per_device(batch: int, world_size: int, what: str = "batch size") -> int:
    """One process's share of a global batch (it must divide evenly)."""
    if batch % world_size:
        raise ValueError(f"{what} {batch} is not divisible by the {world_size} processes")
    return batch // world_size


def with_lora(model, lora: LoraSpec | None):
    """``model`` with LoRA adapters (peft; only the adapters train), or ``model`` itself."""
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


TOKEN_KINDS = ("trained", "prefill", "generated")


class RowCount(TrainerCallback, ExportableState):
    """The rows (examples; GRPO: rollouts) and tokens trained on and the optimizer steps,
    over all processes; saved in every checkpoint's trainer_state.json and read back on
    resume, so a resumed run counts all of its steps. Tokens (non-padding, image tokens
    included): ``trained`` went through a forward and backward pass; GRPO's rollouts add
    ``prefill`` (prompt tokens encoded to start sampling) and ``generated`` (sampled tokens)."""

    def __init__(self, rows: int = 0, steps: int = 0, tokens: dict | None = None):
        self.rows, self.steps = rows, steps
        self.tokens = dict.fromkeys(TOKEN_KINDS, 0) | (tokens or {})
        self.pending = 0  # this process's rows since the last optimizer step
        self.pending_tokens = dict.fromkeys(TOKEN_KINDS, 0)

    def state(self) -> dict:
        return {"args": {"rows": self.rows, "steps": self.steps, "tokens": self.tokens}}

    def restore(self, state) -> None:
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, dict):
            self.rows, self.steps = saved["args"]["rows"], saved["args"]["steps"]
            self.tokens = dict.fromkeys(TOKEN_KINDS, 0) | saved["args"].get("tokens", {})

    def on_train_begin(self, args, state, control, **kwargs):
        self.restore(state)  # the resumed checkpoint's counts (none: a fresh start)

    def on_step_end(self, args, state, control, **kwargs):
        self.rows += distributed.all_sum(self.pending)  # every process ends every step
        for kind in TOKEN_KINDS:
            self.tokens[kind] += int(distributed.all_sum(self.pending_tokens[kind]))
        self.steps += 1
        self.pending = 0
        self.pending_tokens = dict.fromkeys(TOKEN_KINDS, 0)


def _mask_sum(inputs: dict, key: str) -> int:
    mask = inputs.get(key)
    return int(mask.sum()) if mask is not None else 0


class CountsRows:
    """Trainer mixin: counts the rows (examples; GRPO: rollouts) and tokens of every
    optimizer step over all processes (RowCount). ``rows_per_step()``: the global batch as
    trained, whatever the world size (None before any step); ``token_counts()``: the run's
    tokens (see there)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._row_count = RowCount()
        self.add_callback(self._row_count)

    def compute_loss(self, model, inputs, *args, **kwargs):
        ids = inputs.get("completion_ids", inputs.get("input_ids"))
        if ids is not None and model.training:
            count = self._row_count
            count.pending += len(ids)
            if "completion_mask" in inputs:  # GRPO rollouts: sampled once, trained on once
                count.pending_tokens["prefill"] += _mask_sum(inputs, "prompt_mask")
                count.pending_tokens["generated"] += _mask_sum(inputs, "completion_mask")
            else:
                mask = inputs.get("attention_mask")
                count.pending_tokens["trained"] += (
                    int(mask.sum()) if mask is not None else ids.numel()
                )
        return super().compute_loss(model, inputs, *args, **kwargs)

    def count_trained(self, inputs: dict) -> None:
        """GRPO: the rollout tokens the update really runs on (after rows_with_signal)."""
        if self.model.training:
            trained = _mask_sum(inputs, "prompt_mask") + _mask_sum(inputs, "completion_mask")
            self._row_count.pending_tokens["trained"] += trained

    def rows_per_step(self) -> float | None:
        count = self._row_count
        if not count.steps:  # not trained in this process (train_resumable loaded the end)
            count.restore(self.state)
        return count.rows / count.steps if count.steps else None

    def token_counts(self, reference_model: bool = False) -> dict[str, int]:
        """The run's tokens over all processes: ``backward`` (trained on), ``generated``
        (sampled) and ``forward`` (every token a forward pass of the policy computed: the
        trained ones, the rollouts' prefill and sampled tokens, and, with a reference model
        (GRPO beta > 0), the rollouts once more)."""
        count = self._row_count
        if not count.steps:
            count.restore(self.state)
        t = count.tokens
        rollouts = t["prefill"] + t["generated"]
        return {
            "tokens/forward": t["trained"] + rollouts * (2 if reference_model else 1),
            "tokens/backward": t["trained"],
            "tokens/generated": t["generated"],
        }


CLOCK = (
    "step_time",
    "tokens/s",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
)


def clock(key: str) -> bool:
    """A wall-clock entry of a trainer's logs (TRL's step_time, the rl trainer's timing/* and
    tokens/s, the HF Trainer's end-of-run rates)."""
    return key.startswith("timing/") or key in CLOCK


class ClockFreeState:
    """Trainer mixin: wall-clock entries (clock()) reach the callbacks (MLflow, the step log)
    as logged, but not ``state.log_history``, which the checkpoints' trainer_state.json
    saves: checkpoints are versioned outputs (dvc.lock hashes them), the same bytes on every
    run of the same code and seed (`make main` leaves `git status` clean, issue 19)."""

    def log(self, logs, *args, **kwargs):
        super().log(logs, *args, **kwargs)  # appends to log_history, then the callbacks
        if self.state.log_history:
            entry = self.state.log_history[-1]
            for key in [k for k in entry if clock(k)]:
                del entry[key]


class ResumableTrainer(LoadsCheckpointsByFromPretrained, CountsRows, ClockFreeState, Trainer):
    """HF Trainer with a resume that restores Qwen2-VL weights (see the mixin), a count of
    the rows per step (CountsRows) and checkpoints without the clock (ClockFreeState)."""


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
    options: TrainOptions = ONE_PROCESS,
) -> Trainer:
    """A Trainer over ``dataset`` (items: modeling.encode.Encoded), cosine schedule,
    ``batch_size`` examples per optimizer step over all processes."""
    pad_id = processor.tokenizer.pad_token_id
    args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=max_steps,
        per_device_train_batch_size=per_device(batch_size, options.world_size),
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
        save_only_model=False,
        **options.training_args(),
    )
    return quiet_printing(
        ResumableTrainer(
            model=with_lora(model, options.lora),
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
    with signals.deferred_signals():
        trainer.train(resume_from_checkpoint=last)
    signals.raise_if_terminated()


def last_loss(trainer) -> float:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else float("nan")


def save_model_atomic(model, processor, out: str | Path) -> Path:
    """save_pretrained to a temp folder, then rename: never a half-written model folder.
    Replaces ``out`` only if the project made it (mmrpt.safety)."""
    out = Path(out)
    tmp = fresh_dir(out.with_name(out.name + ".tmp"))
    model.save_pretrained(tmp)
    settle_tokenizer(processor)  # the same files whether or not this process generated
    processor.save_pretrained(tmp)
    return replace_dir(tmp, out)


def save_trained(
    trainer, processor, out: str | Path, base: str | Path | None = None
) -> Path | None:
    """Save the trained model to a temp folder, then rename it into place on the main
    process; every process must call it. ZeRO-3 shards are gathered (the config's
    stage3_gather_16bit_weights_on_model_save); LoRA adapters are merged into ``base`` (the
    model training started from), so the folder is a plain model. Returns the folder on the
    main process, else None."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if trainer.is_world_process_zero():
        fresh_dir(tmp)
    trainer.save_model(str(tmp))
    if not trainer.is_world_process_zero():
        return None
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle: never part of a model
    if (tmp / "adapter_config.json").exists():
        if base is None:
            raise ValueError("save_trained: LoRA adapters need the base model to merge into")
        merge_lora(base, tmp, tmp)
    settle_tokenizer(processor)  # the same files whether or not this process generated
    processor.save_pretrained(tmp)
    return replace_dir(tmp, out)


class SaveAtSteps(TrainerCallback):
    """Saves the model (and processor) to ``folder/<step>`` after each of ``steps``: the
    snapshots of a budget curve (e.g. accuracy vs SFT steps) from one training run. Saved as
    the final model is (save_trained, called on every process): ZeRO-3 shards gathered, LoRA
    adapters merged into ``base``, so each snapshot is a plain, whole model."""

    def __init__(self, trainer, steps, folder: str | Path, processor, base: str | Path):
        self.trainer, self.steps, self.folder = trainer, set(steps), Path(folder)
        self.processor, self.base = processor, base
        self.folder.mkdir(parents=True, exist_ok=True)  # a DVC output, even with no steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            save_trained(
                self.trainer, self.processor, self.folder / str(state.global_step), self.base
            )


def merge_lora(base: str | Path, adapters: str | Path, out: str | Path) -> Path:
    """``base`` with the LoRA ``adapters`` folder merged in, saved as a plain model folder at
    ``out`` (which may be the adapters folder itself)."""
    from peft import PeftModel

    model, _ = load_vlm(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapters)).merge_and_unload()
    out = Path(out)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (out / f).unlink(missing_ok=True)
    merged.save_pretrained(out)
    return out


def release_training() -> None:
    """After a trainer is done (delete it first): forget DeepSpeed's global config, so that
    models loaded afterwards are plain, whole models (under ZeRO-3 from_pretrained would
    partition them across processes that may have exited), and free memory."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
