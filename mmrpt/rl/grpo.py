"""GRPO on masked-span reconstruction, built on TRL's GRPOTrainer.

TRL does the rollouts (left-padded prompts with the image), group-relative advantages, the
clipped policy loss and its logging; this module supplies the dataset (conversational prompt +
image + the sample's columns, which TRL passes to every reward function) and the weighted
reward table. Departures from textbook GRPO, all params: KL coefficient beta = 0 by default
(as RPT), loss_type "dapo" (token-level normalisation), no reference model when beta = 0.
Groups whose rewards are all equal carry no signal; TRL logs their share as
frac_reward_zero_std (we do not resample them yet). Their rollouts have advantage 0, and with
beta = 0 and a token-sum loss ("dapo", "cispo") their gradient is exactly 0, so the update
skips them (SkipsZeroAdvantageRows; single process for "dapo"): same gradient, less work
(bench/rl_bench.py). TRL's entropy and clip-ratio metrics are then over the rollouts that
carry signal.

A step is ``batch_size`` prompts over all processes (TRL's generation batch spans them);
rollouts go through TRL's vLLM integration (colocated) with ``vllm=True``, where CUDA and
vllm are present, else through transformers' generate.

Besides TRL's metrics, every optimizer step logs its time split (RolloutTiming) and, every
``log_completions_steps`` steps, hands a table of sample completions with their images to any
callback that has an ``on_completions`` method (mmrpt.stages.step_logger.StepLogger logs it to MLflow).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from mmrpt.images import open_rgb
from mmrpt.masking.samples import MaskedSample
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.rl.rewards import REWARDS, completion_text, minilm
from mmrpt.training import (
    ONE_PROCESS,
    ClockFreeState,
    CountsRows,
    TrainOptions,
    per_device,
    quiet_printing,
    with_lora,
)


def grpo_dataset(samples: Sequence[MaskedSample], root: str | Path) -> Dataset:
    root = Path(root)

    def rows():
        for s in samples:
            yield {
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": s.prompt}],
                    }
                ],
                "image": open_rgb(root / s.image),
                "targets": s.targets,
                "masked_caption": s.masked_caption,
                "think": s.think,
                "occurrence": s.occurrence,
                "meta": json.dumps(s.meta),
            }

    return Dataset.from_generator(rows)


def _with_scene(fn, **fixed):
    """TRL passes dataset columns as lists; meta travels as JSON text (datasets cannot hold
    free-form dicts with varying keys), so decode it for the reward functions. ``fixed``:
    keyword arguments every call gets (e.g. the visual term's visual_model)."""

    def reward(completions, meta=None, **columns):
        metas = [json.loads(m) if isinstance(m, str) else m for m in (meta or [])]
        return fn(completions, meta=metas, **columns, **fixed)

    reward.__name__ = fn.__name__.removesuffix("_reward")
    return reward


class _OnStepEnd(TrainerCallback):
    def __init__(self, fn: Callable[[], None]):
        self.fn = fn

    def on_step_end(self, args, state, control, **kwargs):
        self.fn()


class RolloutTiming:
    """Mixin for TRL's GRPOTrainer: per optimizer step, the time split and throughput.

    A step runs from fetching its batch to the end of the optimizer step. Of it,
    timing/generation_s is the rollout phase (TRL's _generate_and_score_completions: sampling,
    rewards, advantages, old log-probs when needed), timing/reward_s the reward part of that,
    timing/update_s the rest (loss, backward, optimizer step), timing/step_s the whole.
    tokens/s = prompt + completion tokens of this process's rollouts (unpadded, image tokens
    included, each completion with its prompt, as verl's perf/throughput counts them per GPU)
    per second of step. The values go into TRL's metric buffer, so they are averaged over the
    logging window and logged with TRL's own metrics. Only wraps TRL methods (super calls).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = {"start": None, "generation": 0.0, "reward": 0.0, "tokens": 0}
        self.add_callback(_OnStepEnd(self._step_ended))

    def get_batch_samples(self, *args, **kwargs):
        if self._clock["start"] is None:
            self._clock["start"] = time.perf_counter()
        return super().get_batch_samples(*args, **kwargs)

    def _timed(self, key: str, method, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            self._clock[key] += time.perf_counter() - t0

    def _generate_and_score_completions(self, *args, **kwargs):
        return self._timed("generation", super()._generate_and_score_completions, *args, **kwargs)

    def _calculate_rewards(self, *args, **kwargs):
        return self._timed("reward", super()._calculate_rewards, *args, **kwargs)

    def _generate(self, prompts):
        out = super()._generate(prompts)
        prompt_ids, completion_ids, tool_mask = out[:3]
        completion = (
            sum(map(sum, tool_mask)) if tool_mask is not None else sum(map(len, completion_ids))
        )
        self._clock["tokens"] += sum(map(len, prompt_ids)) + completion
        return out

    def _step_ended(self) -> None:
        c = self._clock
        if c["start"] is None:
            return
        step = time.perf_counter() - c["start"]
        metrics = self._metrics["train"]
        metrics["timing/step_s"].append(step)
        metrics["timing/generation_s"].append(c["generation"])
        metrics["timing/reward_s"].append(c["reward"])
        metrics["timing/update_s"].append(step - c["generation"])
        metrics["tokens/s"].append(c["tokens"] / step)
        self._clock = {"start": None, "generation": 0.0, "reward": 0.0, "tokens": 0}


PER_ROLLOUT_KEYS = {
    "prompt_ids",
    "prompt_mask",
    "completion_ids",
    "completion_mask",
    "advantages",
    "old_per_token_logps",
    "sampling_per_token_logps",
    "ref_per_token_logps",
    "importance_sampling_ratio",
    "mm_token_type_ids",
    "token_type_ids",
    "tool_mask",
}


def rows_with_signal(inputs: dict) -> dict:
    """The rollouts of one update batch whose advantage is not 0 (at least one, so the
    forward and backward still run on every process, as DeepSpeed needs). Images go with
    their rollouts (TRL's own per-rollout split of pixel_values by image_grid_thw);
    ``num_items_in_batch`` (the loss normaliser) is kept as it was. Returns ``inputs`` itself
    when nothing can be dropped or a key is not understood."""
    adv = inputs["advantages"]
    keep = adv != 0 if adv.dim() == 1 else (adv != 0).any(dim=1)
    images = {"pixel_values", "image_grid_thw", "num_images"}
    if (
        keep.all()
        or not set(inputs) <= PER_ROLLOUT_KEYS | images | {"num_items_in_batch"}
        or ("pixel_values" in inputs and not images <= set(inputs))
    ):
        return inputs
    if not keep.any():
        keep[0] = True
    rows = keep.tolist()
    split = split_pixel_values_by_grid(inputs)  # image keys become per-rollout lists
    out = {
        k: [x for x, r in zip(v, rows, strict=True) if r] if isinstance(v, list) else v
        for k, v in split.items()
        if k in images
    }
    out |= {k: v[keep] for k, v in inputs.items() if k in PER_ROLLOUT_KEYS}
    out["num_items_in_batch"] = inputs["num_items_in_batch"]
    return unsplit_pixel_values_by_grid(out)


class SkipsZeroAdvantageRows:
    """Mixin for TRL's GRPOTrainer: the update runs only on rollouts with a non-zero
    advantage when that leaves the gradient unchanged: beta = 0, a loss normalised by the
    batch's token count, no entropy mask or bonus, off-policy mask or MoE aux loss (they
    depend on the whole batch), and one process (TRL's dapo branch gathers per-rollout clip
    statistics across processes, which needs the same number of rollouts on each)."""

    def skips_zero_advantage_rows(self) -> bool:
        return (
            self.beta == 0.0
            and self.loss_type in ("dapo", "cispo")
            and self.top_entropy_quantile == 1.0
            and self.off_policy_mask_threshold is None
            and not getattr(self, "_entropy_bonus_enabled", True)
            and not getattr(self, "aux_loss_enabled", True)
            and (self.accelerator.num_processes == 1 or self.loss_type == "cispo")
        )

    def _compute_loss(self, model, inputs):
        if self.skips_zero_advantage_rows():
            inputs = rows_with_signal(inputs)
        if hasattr(self, "count_trained"):  # CountsRows
            self.count_trained(inputs)
        return super()._compute_loss(model, inputs)


class ResumableGRPOTrainer(
    LoadsCheckpointsByFromPretrained,
    CountsRows,
    ClockFreeState,
    SkipsZeroAdvantageRows,
    RolloutTiming,
    GRPOTrainer,
):
    """TRL's GRPOTrainer with a resume that restores Qwen2-VL weights (see the mixin), the
    update on rollouts with signal only (SkipsZeroAdvantageRows), the step timing of
    RolloutTiming, the rollouts per step (CountsRows), and every ``log_completions_steps``
    steps (0 = never) the
    latest rollouts as a table for callbacks with ``on_completions(args, state, control,
    table)``: columns step, prompt, completion, one per reward term, advantage, image (PIL)."""

    def __init__(self, *args, log_completions_steps: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_completions_steps = log_completions_steps

    def completions_table(self) -> dict[str, list]:
        logs = self._logs  # TRL keeps the latest generation batch here (gathered)
        n = len(logs["completion"])
        images = list(logs["images"]) if len(logs["images"]) == n else [None] * n
        table = {
            "step": [self.state.global_step] * n,
            "prompt": [completion_text(p) for p in logs["prompt"]],
            "completion": [completion_text(c) for c in logs["completion"]],
        }
        table |= {f"reward/{k}": list(v) for k, v in logs["rewards"].items()}
        table["advantage"] = list(logs["advantages"])
        table["image"] = [imgs[0] if imgs else None for imgs in images]
        return table

    def _step_ended(self) -> None:
        super()._step_ended()
        every = self.log_completions_steps
        if not every or self.state.global_step % every or not self.state.is_world_process_zero:
            return
        targets = [cb for cb in self.callback_handler.callbacks if hasattr(cb, "on_completions")]
        if targets:
            table = self.completions_table()
            for cb in targets:
                cb.on_completions(self.args, self.state, self.control, table=table)


class VLLMUnavailable(RuntimeError):
    """vLLM rollouts were asked for where they cannot run."""


def check_vllm() -> None:
    """vLLM rollouts need CUDA and the vllm package (the `vllm` extra)."""
    import importlib.util

    missing = [
        what
        for what, ok in (
            ("CUDA", torch.cuda.is_available()),
            ("the vllm package (pip install 'mmrpt[vllm]')", importlib.util.find_spec("vllm")),
        )
        if not ok
    ]
    if missing:
        raise VLLMUnavailable(
            f"rl.vllm=true needs {' and '.join(missing)}; this machine has neither or not "
            "both: set rl.vllm=false (rollouts through transformers' generate)"
        )


def grpo_config(
    *,
    out_dir: str | Path,
    steps: int,
    batch_size: int,
    num_generations: int,
    temperature: float,
    lr: float,
    beta: float,
    loss_type: str,
    max_completion_length: int,
    reward_weights: Sequence[float],
    save_steps: int,
    seed: int,
    options: TrainOptions = ONE_PROCESS,
    micro_batches: int = 1,
    vllm: bool = False,
    vllm_memory: float = 0.3,
) -> GRPOConfig:
    """TRL's config for our runs: ``batch_size`` prompts per optimizer step over all
    ``options.world_size`` processes, each with ``num_generations`` rollouts, one weight per
    reward function. The rollouts of a step are generated at once and trained on in
    ``micro_batches`` gradient-accumulation slices (still on-policy: one optimizer step per
    generation); each process trains on batch x G / (world_size x micro_batches) rollouts
    per forward. ``vllm``: rollouts through TRL's colocated vLLM engine (one per process,
    ``vllm_memory`` of its GPU)."""
    rollouts = batch_size * num_generations
    if rollouts % micro_batches:
        raise ValueError(
            f"batch_size x num_generations = {rollouts} is not divisible by "
            f"micro_batches = {micro_batches}"
        )
    per_process = per_device(rollouts, options.world_size, "rollouts per step")
    vllm_args = (
        {
            "use_vllm": True,
            "vllm_mode": "colocate",
            "vllm_gpu_memory_utilization": vllm_memory,
            "vllm_tensor_parallel_size": 1,
        }
        if vllm
        else {}
    )
    return GRPOConfig(
        output_dir=str(out_dir),
        max_steps=steps,
        learning_rate=lr,
        seed=seed,
        per_device_train_batch_size=per_device(per_process, micro_batches, "rollouts"),
        gradient_accumulation_steps=micro_batches,
        steps_per_generation=micro_batches,
        num_generations=num_generations,
        temperature=temperature,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        reward_weights=list(reward_weights),
        logging_steps=5,
        save_steps=save_steps,
        save_total_limit=2,
        report_to=[],
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=1.0,
        **vllm_args,
        **options.training_args(),  # gradient checkpointing off unless asked (TRL's default: on)
    )


def make_grpo_trainer(
    model,
    processor,
    dataset: Dataset,
    *,
    out_dir: str | Path,
    steps: int,
    batch_size: int,
    num_generations: int,
    temperature: float,
    lr: float,
    beta: float,
    loss_type: str,
    max_completion_length: int,
    reward_weights: dict[str, float],
    save_steps: int,
    seed: int,
    callbacks: Sequence[TrainerCallback] = (),
    options: TrainOptions = ONE_PROCESS,
    log_completions_steps: int = 50,
    micro_batches: int = 1,
    visual_model: str | None = None,
    vllm: bool = False,
    vllm_memory: float = 0.3,
) -> GRPOTrainer:
    """Our trainer with the reward table's terms of weight > 0 (see grpo_config); every
    ``log_completions_steps`` steps (0 = off) a completions table goes to the callbacks.
    ``visual_model``: the image-text model of the visual term where a sample has no scene."""
    if vllm:
        check_vllm()
    names = [n for n, w in reward_weights.items() if w > 0]
    if "semantic" in names:  # its embedder, loaded now: once the config below exists, ZeRO-3
        minilm()  # would partition every model loaded (from_pretrained under zero.Init)
    if "visual" in names and visual_model is not None:  # the same for the image-text model
        from mmrpt.rl.visual import image_text_scorer

        image_text_scorer(visual_model)
    processor.tokenizer.padding_side = "left"
    args = grpo_config(
        out_dir=out_dir,
        steps=steps,
        batch_size=batch_size,
        num_generations=num_generations,
        temperature=temperature,
        lr=lr,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        reward_weights=[reward_weights[n] for n in names],
        save_steps=save_steps,
        seed=seed,
        options=options,
        micro_batches=micro_batches,
        vllm=vllm,
        vllm_memory=vllm_memory,
    )
    trainer = ResumableGRPOTrainer(
        model=with_lora(model, options.lora),
        processing_class=processor,
        args=args,
        train_dataset=dataset,
        reward_funcs=[
            _with_scene(REWARDS[n], **({"visual_model": visual_model} if n == "visual" else {}))
            for n in names
        ],
        callbacks=list(callbacks),
        log_completions_steps=log_completions_steps,
    )
    return quiet_printing(trainer)
