"""Stage `rl`: one arm of the comparison (``--arm``, an entry of `arms`), one replicate
(``--seed``), from the shared primer.

Every arm runs rl.steps optimizer steps on rl.batch_size samples per step, drawn from the
masked train samples the primer did not see, with its objective:
- ntp  : caption next-token prediction on those samples' captions (HF Trainer);
- sft  : supervised fill-in of the masked samples (imitation);
- grpo : GRPO with the arm's reward weights (TRL), rl.num_generations rollouts per sample;
- rft  : rejection-sampling fine-tuning (mmrpt.rl.rft): the start model samples
         rl.num_generations completions per sample once, the ones every reward term of
         weight > 0 gives full credit are the supervised data (the HF Trainer, as sft).
Steps and samples are equal across arms; compute is not (a GRPO step also generates
rl.num_generations completions per sample and trains on all of them): each run reports its
tokens forwarded, backpropagated and generated (``tokens/*`` in metrics/rl/<run>.json).
Then held-out masked-span exact match on rl.eval_splits (the primary masks, the same for all
arms). Writes models/rl/<arm>-<seed>, metrics/rl/<arm>-<seed>.json, plots/rl/<arm>-<seed>.csv.
Runs in launch.num_processes processes (rl.batch_size stays the prompts per step over all of
them); the evaluation runs on the main process, on the saved model, outside any DeepSpeed
partitioning.
"""

from __future__ import annotations

import logging

import torch

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.data.records import read_manifest
from mmrpt.io import write_csv_atomic, write_json_atomic
from mmrpt.masking.samples import read_samples, samples_path
from mmrpt.modeling.loader import load_vlm
from mmrpt.pretrain.warmup import CaptionDataset
from mmrpt.rl.fillin import FillInDataset, fillin_exact_match
from mmrpt.rl.grpo import VLLMUnavailable, check_vllm, grpo_dataset, make_grpo_trainer
from mmrpt.rl.rft import CompletionDataset, read_accepted, rejection_samples, write_accepted
from mmrpt.stages.common import checkpoint_dir, require_masks, run_seed, train_options
from mmrpt.stages.step_logger import StepLogger
from mmrpt.training import (
    device,
    make_trainer,
    release_training,
    save_trained,
    seed_everything,
    train_resumable,
)

log = logging.getLogger(__name__)


def preflight(ctx: StageContext) -> None:
    """Before the inputs are checked: vLLM rollouts need CUDA and vllm."""
    if ctx.params.rl.vllm and ctx.params.arms[ctx.arm].objective == "grpo":
        try:
            check_vllm()
        except VLLMUnavailable as e:
            raise ParamsError(str(e)) from None


def run(ctx: StageContext) -> dict:
    p, rp = ctx.params, ctx.params.rl
    arm = p.arms[ctx.arm]
    seed = run_seed(ctx)
    seed_everything(seed)
    root, masks = ctx.dep("data"), ctx.dep("masks")
    primary = p.mask.selectors[0]
    selector = primary if arm.masks == "primary" else arm.masks
    require_masks(masks, selector, {"mask.splits": ["train"]})
    require_masks(masks, primary, {"rl.eval_splits": rp.eval_splits})
    samples = read_samples(samples_path(masks, selector, "train"))[p.primer.n_samples :]
    if not samples:
        raise ValueError(
            f"no masked train samples left after the primer's "
            f"{p.primer.n_samples}: lower primer.n_samples"
        )
    start = ctx.dep("model")
    model, processor = load_vlm(start, dtype=torch.float32)
    model.to(device())
    options = train_options(ctx)
    ckpt = checkpoint_dir(ctx, options)
    lr = arm.lr if arm.lr is not None else rp.lr if arm.objective == "grpo" else rp.sft_lr
    common = dict(
        out_dir=ckpt,
        max_steps=rp.steps,
        batch_size=rp.batch_size,
        lr=lr,
        weight_decay=0.0,
        warmup_ratio=0.0,
        save_steps=rp.save_steps,
        save_total_limit=2,
        log_steps=5,
        seed=seed,
        callbacks=[StepLogger()],
        options=options,
    )
    weights = arm.reward_weights if arm.reward_weights is not None else rp.reward_weights
    sampled: dict = {}  # rft: the sampling pass's counts
    with tracking.stage_run(ctx, run_id_file=tracking.resume_file(ckpt)):
        if arm.objective == "ntp":
            by_id = {r.id: r for r in read_manifest(root / "train.jsonl")}
            records = [by_id[s.id] for s in samples]
            trainer = make_trainer(
                model,
                processor,
                CaptionDataset(records, root, processor, p.warmup.prompt),
                **common,
            )
        elif arm.objective == "sft":
            trainer = make_trainer(
                model, processor, FillInDataset(samples, root, processor), **common
            )
        elif arm.objective == "rft":
            pairs, sampled = rft_data(ctx, model, processor, samples, weights)
            trainer = make_trainer(
                model, processor, CompletionDataset(pairs, root, processor), **common
            )
        else:
            trainer = make_grpo_trainer(
                model,
                processor,
                grpo_dataset(samples, root),
                out_dir=ckpt,
                steps=rp.steps,
                batch_size=rp.batch_size,
                num_generations=rp.num_generations,
                temperature=rp.temperature,
                lr=lr,
                beta=rp.beta,
                loss_type=rp.loss_type,
                max_completion_length=rp.max_completion_length,
                reward_weights=weights,
                save_steps=rp.save_steps,
                seed=seed,
                callbacks=[StepLogger()],
                options=options,
                log_completions_steps=rp.log_completions_steps,
                visual_model=rp.visual_model,
                micro_batches=rp.micro_batches,
                vllm=rp.vllm,
                vllm_memory=rp.vllm_memory,
            )
        train_resumable(trainer, ckpt)
        rows = trainer.rows_per_step()  # GRPO: rollouts
        tokens = trainer.token_counts(reference_model=arm.objective == "grpo" and rp.beta > 0)
        if sampled:  # rft's sampling pass, before training
            tokens["tokens/forward"] += sampled["tokens/prefill"] + sampled["tokens/generated"]
            tokens["tokens/generated"] += sampled["tokens/generated"]
        per_sample = rp.num_generations if arm.objective == "grpo" else 1
        samples_per_step = rows / per_sample if rows is not None else None
        curve = [
            {
                "step": h["step"],
                **{
                    k: v
                    for k, v in h.items()
                    if isinstance(v, int | float) and k not in ("step", "epoch")
                },
            }
            for h in trainer.state.log_history
            if "loss" in h or "reward" in h
        ]
        processor.tokenizer.padding_side = "right"
        out = save_trained(trainer, processor, ctx.out("model"), base=start)
        del trainer, model
        release_training()
        if out is None:  # not the main process of a multi-process run
            return {}
        write_csv_atomic(ctx.table_path("curve"), curve, columns=["step", "loss"])
        model, processor = load_vlm(out, dtype=torch.float32)  # evaluate what was saved
        model.to(device())
        metrics: dict = {
            "arm": ctx.arm,
            "seed": ctx.seed,
            "objective": arm.objective,
            "steps": rp.steps,
            "train_samples": len(samples),
            "samples_per_step": samples_per_step,
            **tokens,
            **{k: v for k, v in sampled.items() if k.startswith("rft/")},
        }
        for split in rp.eval_splits:
            held_out = read_samples(samples_path(masks, primary, split))[: rp.eval_samples]
            em, _ = fillin_exact_match(model, processor, held_out, root, p.primer.max_new_tokens)
            metrics["exact_match" if split == rp.eval_splits[0] else f"exact_match_{split}"] = em
        tracking.log_metrics(metrics)
        tracking.log_model(out, f"rl-{ctx.arm}")
    write_json_atomic(ctx.table_path("metrics"), metrics)
    log.info("rl: %s", metrics)
    return metrics


def rft_data(ctx: StageContext, model, processor, samples, weights) -> tuple[list, dict]:
    """rft's supervised data: the accepted completions of one sampling pass by the start
    model, kept beside the checkpoints (a resumed run trains on the same data). The main
    process samples; the others read its file."""
    from mmrpt import distributed

    rp, path = ctx.params.rl, ctx.out("checkpoints") / "rft_accepted.json"
    if distributed.is_main() and not path.exists():
        pairs, counts = rejection_samples(
            model,
            processor,
            samples,
            ctx.dep("data"),
            weights=weights,
            n=rp.num_generations,
            temperature=rp.temperature,
            max_new_tokens=rp.max_completion_length,
        )
        log.info(
            "rft: %d of %d sampled completions accepted (%d of %d prompts)",
            counts["rft/accepted"],
            counts["rft/sampled"],
            counts["rft/prompts_with_accepted"],
            counts["rft/prompts"],
        )
        write_accepted(path, pairs, counts)
    distributed.barrier()
    pairs, counts = read_accepted(path, samples)
    if not pairs:  # a model this weak gives rft no data: say so, do not retry
        raise ParamsError(
            f"rft: none of the {counts['rft/sampled']} sampled completions earned full credit "
            "from every reward term of weight > 0; raise rl.num_generations or lower the "
            "weights' terms"
        )
    return pairs, counts
