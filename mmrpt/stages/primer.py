"""Stage `primer`: a short supervised fill-in on a train subset disjoint from the RL data, so
every arm starts from a model that knows the answer format. Also measures the reconstruction
exact match of the caption-only warmup model (by continuing the caption) and of the primer."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.modeling.loader import load_vlm
from mmrpt.pretrain.warmup import make_trainer
from mmrpt.rl.fillin import FillInDataset, caption_exact_match, fillin_exact_match, read_samples
from mmrpt.stages.common import (
    device,
    fingerprint_dir,
    params_hash,
    save_model_atomic,
    seed_everything,
    train_resumable,
    trained_model_path,
    write_metrics,
)

log = logging.getLogger(__name__)


def masked_path(params: Params, selector: str, split: str) -> Path:
    return Path(params.mask.out_dir) / selector / f"{split}.jsonl"


def run(params: Params) -> dict:
    pp = params.primer
    seed_everything(params.seed)
    root = Path(params.data.out_dir)
    primary = params.mask.selectors[0]
    samples = read_samples(masked_path(params, primary, "train"))[: pp.n_samples]
    held_out = read_samples(masked_path(params, primary, pp.eval_split))[: pp.eval_samples]
    model, processor = load_vlm(trained_model_path(params), dtype=torch.float32,
                                trust_remote_code=params.model.trust_remote_code)
    model.to(device())
    ckpt = fingerprint_dir(Path(pp.checkpoint_dir), params_hash(
        params.seed, params.data, params.model, params.warmup, params.score, params.mask,
        pp.model_dump(exclude={"eval_split", "eval_samples", "max_new_tokens"})))
    metrics: dict = {"n_samples": len(samples)}
    with tracking.stage_run("primer", params, run_id_file=ckpt / "mlflow_run_id.txt"):
        metrics["warmup_exact_match"] = caption_exact_match(model, processor, held_out, root,
                                                            params.warmup.prompt)
        metrics["warmup_fillin_exact_match"], _ = fillin_exact_match(
            model, processor, held_out, root, pp.max_new_tokens)
        trainer = make_trainer(
            model, processor, FillInDataset(samples, root, processor), out_dir=ckpt,
            max_steps=pp.max_steps, batch_size=pp.batch_size, lr=pp.lr, weight_decay=0.0,
            warmup_ratio=0.05, save_steps=pp.save_steps, save_total_limit=2, log_steps=10,
            seed=params.seed, callbacks=[tracking.StepLogger()])
        train_resumable(trainer, ckpt)
        save_model_atomic(model, processor, pp.out_dir)
        metrics["primer_exact_match"], completions = fillin_exact_match(
            model, processor, held_out, root, pp.max_new_tokens)
        tracking.log_metrics(metrics)
        tracking.log_dict({"samples": [{"id": s["id"], "masked": s["masked_caption"],
                                        "targets": s["targets"], "completion": c}
                                       for s, c in zip(held_out[:20], completions, strict=False)]},
                          "primer_completions.json")
    write_metrics("primer", metrics)
    log.info("primer: %s", metrics)
    return metrics
