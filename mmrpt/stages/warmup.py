"""Stage `warmup`: build (or load) the base VLM and pre-train it on captions.

Resumable: checkpoints go to warmup.checkpoint_dir (a persistent DVC output) together with a
fingerprint of what shaped them (the stage's declared params and its input files); a rerun
with the same fingerprint resumes from the last checkpoint (optimizer, scheduler and RNG state
included) and continues the same MLflow run. With warmup.enabled false (a pretrained
model.path), the output is a reference to model.path that later stages load through.
Runs in launch.num_processes processes (mmrpt/launch.py); the vision-reliance check runs on
the main process, on the saved model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mmrpt import distributed, tracking
from mmrpt.contract import StageContext
from mmrpt.data import world
from mmrpt.data.records import read_manifest
from mmrpt.io import write_csv_atomic, write_json_atomic
from mmrpt.masking.samples import fillin_target
from mmrpt.modeling.loader import load_vlm, write_model_ref
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
from mmrpt.pretrain.warmup import CaptionDataset, vision_reliance
from mmrpt.safety import fresh_dir, replace_dir
from mmrpt.stages.common import checkpoint_dir, require_splits, train_options
from mmrpt.stages.step_logger import StepLogger
from mmrpt.training import (
    device,
    last_loss,
    make_trainer,
    release_training,
    save_trained,
    seed_everything,
    train_resumable,
)

log = logging.getLogger(__name__)


def base_model_path(ctx: StageContext, ckpt: Path, train_records) -> str:
    p = ctx.params
    if p.model.path is not None:
        return p.model.path
    init = ckpt / "init"
    if distributed.is_main() and not (init / "model.safetensors").exists():
        spec = TinySpec(**p.model.tiny.model_dump(), image_size=p.data.image_size)
        # the fill-in format of later stages too, so its tags and placeholders are tokens
        fmt = [p.mask.instruction, fillin_target(["a", "b", "c"]), "[1] [2] [3] [4]"]
        texts = [r.caption for r in train_records] + world.vocabulary_text() + fmt * 50
        tmp = fresh_dir(ckpt / "init.tmp")
        build_tiny_vlm(texts, spec, tmp, seed=p.seed)
        replace_dir(tmp, init)
    distributed.barrier()  # the other processes load what the main one built
    return str(init)


def run(ctx: StageContext) -> dict:
    p, w = ctx.params, ctx.params.warmup
    if not w.enabled:
        if p.model.path is None:
            raise ValueError("warmup.enabled=false needs model.path")
        write_model_ref(ctx.out("model"), p.model.path, p.model.min_pixels, p.model.max_pixels)
        metrics = {"steps": 0, "model": p.model.path}
        write_json_atomic(ctx.metrics_path(), metrics)
        write_csv_atomic(ctx.table_path("loss"), [], columns=["step", "loss"])
        return metrics
    if w.num_threads:
        torch.set_num_threads(w.num_threads)
    seed_everything(p.seed)
    root = ctx.dep("data")
    require_splits(root, "data.inputs", ["train"])
    require_splits(root, "warmup.eval_split", [w.eval_split])
    train = read_manifest(root / "train.jsonl")
    options = train_options(ctx)
    ckpt = checkpoint_dir(ctx, options)
    base = base_model_path(ctx, ckpt, train)
    model, processor = load_vlm(
        base,
        trust_remote_code=p.model.trust_remote_code,
        dtype=torch.float32,
        min_pixels=p.model.min_pixels,
        max_pixels=p.model.max_pixels,
    )
    model.to(device())
    with tracking.stage_run(ctx, run_id_file=tracking.resume_file(ckpt)):
        trainer = make_trainer(
            model,
            processor,
            CaptionDataset(train, root, processor, w.prompt),
            out_dir=ckpt,
            max_steps=w.max_steps,
            batch_size=w.batch_size,
            lr=w.lr,
            weight_decay=w.weight_decay,
            warmup_ratio=w.warmup_ratio,
            save_steps=w.save_steps,
            save_total_limit=w.save_total_limit,
            log_steps=w.log_steps,
            seed=p.seed,
            callbacks=[StepLogger()],
            options=options,
        )
        train_resumable(trainer, ckpt)
        metrics: dict = {
            "steps": trainer.state.global_step,
            "final_train_loss": last_loss(trainer),
            "samples_per_step": trainer.rows_per_step(),
        }
        history = [
            {"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h
        ]
        out = save_trained(trainer, processor, ctx.out("model"), base=base)
        del trainer, model
        release_training()
        if out is None:  # not the main process of a multi-process run
            return {}
        model, processor = load_vlm(out, dtype=torch.float32)  # check what was saved
        model.to(device())
        if w.eval_split is not None:
            held_out = read_manifest(root / f"{w.eval_split}.jsonl")[: w.eval_samples]
            metrics |= vision_reliance(model, processor, held_out, root, w.prompt)
        else:
            log.warning("warmup: no held-out split; vision-reliance check skipped")
        tracking.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        tracking.log_model(out, "warmup")
    write_json_atomic(ctx.metrics_path(), metrics)
    write_csv_atomic(ctx.table_path("loss"), history, columns=["step", "loss"])
    log.info("warmup: %s", metrics)
    return metrics
