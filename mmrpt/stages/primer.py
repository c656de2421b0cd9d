"""Stage `primer`: a short supervised fill-in on a train subset disjoint from the RL data, so
every arm starts from a model that knows the answer format. Also measures the reconstruction
exact match of the caption-only warmup model (by continuing the caption) and of the primer.
Runs in launch.num_processes processes; both evaluations run on the main process (the
primer's on the saved model)."""

from __future__ import annotations

import logging

import torch

from mmrpt import distributed, tracking
from mmrpt.contract import StageContext
from mmrpt.io import write_json_atomic
from mmrpt.masking.samples import read_samples, samples_path
from mmrpt.modeling.loader import load_vlm
from mmrpt.rl.fillin import FillInDataset, caption_exact_match, fillin_exact_match
from mmrpt.stages.common import checkpoint_dir, require_masks, train_options
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


def run(ctx: StageContext) -> dict:
    p, pp = ctx.params, ctx.params.primer
    seed_everything(p.seed)
    root, masks = ctx.dep("data"), ctx.dep("masks")
    primary = p.mask.selectors[0]
    require_masks(masks, primary, {"mask.splits": ["train"], "primer.eval_split": [pp.eval_split]})
    samples = read_samples(samples_path(masks, primary, "train"))[: pp.n_samples]
    held_out = read_samples(samples_path(masks, primary, pp.eval_split))[: pp.eval_samples]
    start = ctx.dep("model")
    model, processor = load_vlm(
        start, dtype=torch.float32, trust_remote_code=p.model.trust_remote_code
    )
    model.to(device())
    options = train_options(ctx)
    ckpt = checkpoint_dir(ctx, options)
    metrics: dict = {"n_samples": len(samples)}
    with tracking.stage_run(ctx, run_id_file=tracking.resume_file(ckpt)):
        if distributed.is_main():  # the model before training (the others wait in training)
            metrics["warmup_exact_match"] = caption_exact_match(
                model, processor, held_out, root, p.warmup.prompt
            )
            metrics["warmup_fillin_exact_match"], _ = fillin_exact_match(
                model, processor, held_out, root, pp.max_new_tokens
            )
        trainer = make_trainer(
            model,
            processor,
            FillInDataset(samples, root, processor),
            out_dir=ckpt,
            max_steps=pp.max_steps,
            batch_size=pp.batch_size,
            lr=pp.lr,
            weight_decay=0.0,
            warmup_ratio=0.05,
            save_steps=pp.save_steps,
            save_total_limit=2,
            log_steps=10,
            seed=p.seed,
            callbacks=[StepLogger()],
            options=options,
        )
        train_resumable(trainer, ckpt)
        metrics["samples_per_step"] = trainer.rows_per_step()
        out = save_trained(trainer, processor, ctx.out("model"), base=start)
        del trainer, model
        release_training()
        if out is None:  # not the main process of a multi-process run
            return {}
        model, processor = load_vlm(out, dtype=torch.float32)  # evaluate what was saved
        model.to(device())
        metrics["primer_exact_match"], completions = fillin_exact_match(
            model, processor, held_out, root, pp.max_new_tokens
        )
        tracking.log_metrics(metrics)
        tracking.log_dict(
            {
                "samples": [
                    {"id": s.id, "masked": s.masked_caption, "targets": s.targets, "completion": c}
                    for s, c in zip(held_out[:20], completions, strict=False)
                ]
            },
            "primer_completions.json",
        )
        tracking.log_model(out, "primer")
    write_json_atomic(ctx.metrics_path(), metrics)
    write_json_atomic(ctx.headline_path(), {"masked_em": round(metrics["primer_exact_match"], 4)})
    log.info("primer: %s", metrics)
    return metrics
