"""GRPO on masked-span reconstruction, built on TRL's GRPOTrainer.

TRL does the rollouts (left-padded prompts with the image), group-relative advantages, the
clipped policy loss and its logging; this module supplies the dataset (conversational prompt +
image + the sample's columns, which TRL passes to every reward function) and the weighted
reward table. Departures from textbook GRPO, all params: KL coefficient beta = 0 by default
(as RPT), loss_type "dapo" (token-level normalisation), no reference model when beta = 0.
Groups whose rewards are all equal carry no signal; TRL logs their share as
frac_reward_zero_std (we do not resample them yet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.pretrain.warmup import open_rgb
from mmrpt.rl.rewards import REWARDS


def grpo_dataset(samples: Sequence[dict], root: str | Path) -> Dataset:
    root = Path(root)

    def rows():
        for s in samples:
            yield {"prompt": [{"role": "user", "content": [
                       {"type": "image"}, {"type": "text", "text": s["prompt"]}]}],
                   "image": open_rgb(root / s["image"]), "targets": s["targets"],
                   "masked_caption": s["masked_caption"], "meta": json.dumps(s["meta"])}

    return Dataset.from_generator(rows)


def _with_scene(fn):
    """TRL passes dataset columns as lists; meta travels as JSON text (datasets cannot hold
    free-form dicts with varying keys), so decode it for the reward functions."""
    def reward(completions, meta=None, **columns):
        metas = [json.loads(m) if isinstance(m, str) else m for m in (meta or [])]
        return fn(completions, meta=metas, **columns)
    reward.__name__ = fn.__name__.removesuffix("_reward")
    return reward


class ResumableGRPOTrainer(LoadsCheckpointsByFromPretrained, GRPOTrainer):
    """TRL's GRPOTrainer with a resume that restores Qwen2-VL weights (see the mixin)."""


def make_grpo_trainer(model, processor, dataset: Dataset, *, out_dir: str | Path, steps: int,
                      batch_size: int, num_generations: int, temperature: float, lr: float,
                      beta: float, loss_type: str, max_completion_length: int,
                      reward_weights: dict[str, float], save_steps: int, seed: int,
                      callbacks: Sequence[TrainerCallback] = (), deepspeed: str | None = None,
                      bf16: bool = False) -> GRPOTrainer:
    """``batch_size`` prompts per optimizer step, each with ``num_generations`` rollouts."""
    names = [n for n, w in reward_weights.items() if w > 0]
    processor.tokenizer.padding_side = "left"
    args = GRPOConfig(
        output_dir=str(out_dir), max_steps=steps, learning_rate=lr, seed=seed,
        per_device_train_batch_size=batch_size * num_generations,
        num_generations=num_generations, temperature=temperature, beta=beta,
        loss_type=loss_type, max_completion_length=max_completion_length,
        reward_weights=[reward_weights[n] for n in names], logging_steps=5,
        save_steps=save_steps, save_total_limit=2, report_to=[],
        use_cpu=not torch.cuda.is_available(), bf16=bf16, deepspeed=deepspeed,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL turns it on by default; pure cost at our size
    )
    return ResumableGRPOTrainer(
        model=model, processing_class=processor, args=args, train_dataset=dataset,
        reward_funcs=[_with_scene(REWARDS[n]) for n in names], callbacks=list(callbacks))
