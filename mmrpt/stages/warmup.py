"""Stage `warmup`: build (or load) the base VLM and pre-train it on captions.

Resumable: checkpoints go to warmup.checkpoint_dir (a persistent DVC output) together with a
fingerprint of the params that shaped them; a rerun with the same params resumes from the last
checkpoint (optimizer, scheduler and RNG state included) and continues the same MLflow run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.data import world
from mmrpt.data.records import read_manifest
from mmrpt.modeling.loader import load_vlm
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
from mmrpt.pretrain.warmup import CaptionDataset, make_trainer, vision_reliance
from mmrpt.rl.fillin import fillin_target
from mmrpt.stages.common import (
    PLOTS_DIR,
    device,
    fingerprint_dir,
    params_hash,
    save_model_atomic,
    seed_everything,
    train_resumable,
    write_csv_atomic,
    write_metrics,
)

log = logging.getLogger(__name__)


def prepare_checkpoint_dir(params: Params) -> Path:
    """Keep checkpoints only if they were made with the same params; else start clean."""
    return fingerprint_dir(Path(params.warmup.checkpoint_dir), params_hash(
        params.seed, params.data, params.model,
        params.warmup.model_dump(exclude={"eval_split", "eval_samples"})))


def base_model_path(params: Params, ckpt: Path, train_records) -> str:
    if params.model.path is not None:
        return params.model.path
    init = ckpt / "init"
    if not (init / "model.safetensors").exists():
        spec = TinySpec(**params.model.tiny.model_dump(), image_size=params.data.image_size)
        # the fill-in format of later stages too, so its tags and placeholders are tokens
        fmt = [params.mask.instruction, fillin_target(["a", "b", "c"]), "[1] [2] [3] [4]"]
        texts = [r.caption for r in train_records] + world.vocabulary_text() + fmt * 50
        tmp = ckpt / "init.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_vlm(texts, spec, tmp, seed=params.seed)
        shutil.rmtree(init, ignore_errors=True)
        tmp.rename(init)
    return str(init)


def run(params: Params) -> dict:
    w = params.warmup
    if not w.enabled:
        raise ValueError("warmup.enabled is false: later stages use model.path directly")
    if w.num_threads:
        torch.set_num_threads(w.num_threads)
    seed_everything(params.seed)
    root = Path(params.data.out_dir)
    train = read_manifest(root / "train.jsonl")
    ckpt = prepare_checkpoint_dir(params)
    base = base_model_path(params, ckpt, train)
    model, processor = load_vlm(base, trust_remote_code=params.model.trust_remote_code,
                                dtype=torch.float32)
    model.to(device())
    with tracking.stage_run("warmup", params, run_id_file=ckpt / "mlflow_run_id.txt"):
        trainer = make_trainer(
            model, processor, CaptionDataset(train, root, processor, w.prompt), out_dir=ckpt,
            max_steps=w.max_steps, batch_size=w.batch_size, lr=w.lr, weight_decay=w.weight_decay,
            warmup_ratio=w.warmup_ratio, save_steps=w.save_steps,
            save_total_limit=w.save_total_limit, log_steps=w.log_steps, seed=params.seed,
            callbacks=[tracking.StepLogger()],
        )
        train_resumable(trainer, ckpt)
        out = save_model_atomic(model, processor, w.out_dir)

        eval_path = root / f"{w.eval_split}.jsonl"
        metrics: dict = {"steps": trainer.state.global_step,
                         "final_train_loss": _last_loss(trainer)}
        if eval_path.exists():
            held_out = read_manifest(eval_path)[: w.eval_samples]
            metrics |= vision_reliance(model, processor, held_out, root, w.prompt)
        else:
            log.warning("warmup: no %s split; vision-reliance check skipped", w.eval_split)
        tracking.log_metrics({f"eval/{k}": v for k, v in metrics.items()})
        tracking.log_artifact(out, "model")
    write_metrics("warmup", metrics)
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history
               if "loss" in h]
    write_csv_atomic(PLOTS_DIR / "warmup_loss.csv", history)
    log.info("warmup: %s", metrics)
    return metrics


def _last_loss(trainer) -> float:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else float("nan")
