"""Stage `sft`: the same supervised fine-tuning for every run (rl.arm, rl.seed), starting from
that run's rl output; writes models/sft/<run> and metrics/sft/<run>.json. The data are the
world's train-split probes (embedded) or LLaVA-style conversations (sft.source=llava)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.finetune.vqa import llava_rows, make_sft_trainer, probe_rows
from mmrpt.modeling.loader import CheckpointError, load_vlm
from mmrpt.rl.fillin import read_samples
from mmrpt.stages.common import (
    device,
    fingerprint_dir,
    params_hash,
    run_seed,
    save_trained,
    seed_everything,
    train_resumable,
    weights_stamp,
    write_jsonl_atomic,
    write_metrics,
)

log = logging.getLogger(__name__)


def run(params: Params) -> dict:
    sp, rp = params.sft, params.rl
    name, seed = rp.run_name, run_seed(params)
    seed_everything(seed)
    start = Path(rp.out_dir) / name
    if not start.is_dir():
        raise CheckpointError(f"{start}: no rl output for run {name}; run "
                              f"`python -m mmrpt rl -S rl.arm={rp.arm} -S rl.seed={rp.seed}`")
    metrics: dict = {"arm": rp.arm, "seed": rp.seed, "steps": sp.steps}
    if sp.source == "probes":
        probes = read_samples(Path(params.data.out_dir) / "probes" / "train.jsonl")
        n = min(len(probes), sp.steps * sp.batch_size)  # one pass over a seeded subset
        pick = np.random.default_rng(seed).permutation(len(probes))[:n]
        rows = probe_rows([probes[i] for i in sorted(pick)], params.data.out_dir)
    else:
        rows, refused = llava_rows(sp.inputs, sp.image_root)
        metrics |= {"n_input": refused.n_input, "n_rejected": sum(refused.reasons.values())}
        metrics |= {f"rejected/{r}": n for r, n in refused.reasons.items()}
        write_jsonl_atomic(Path(sp.out_dir) / f"{name}.rejects.jsonl", refused.rows)
        if not rows:
            raise ValueError(f"sft.inputs {sp.inputs}: no usable rows "
                             f"({dict(refused.reasons)})")
    metrics["n_rows"] = len(rows)
    model, processor = load_vlm(start, dtype=torch.float32)
    model.to(device())
    ckpt = fingerprint_dir(Path(sp.checkpoint_dir) / name, params_hash(
        params.seed, rp.seed, sp, weights_stamp(start)))
    with tracking.stage_run("sft", params, run_id_file=ckpt / "mlflow_run_id.txt"):
        tracking.set_tags({"arm": rp.arm, "replicate": str(rp.seed), "run": name})
        trainer = make_sft_trainer(
            model, processor, rows, out_dir=ckpt, steps=sp.steps, batch_size=sp.batch_size,
            lr=sp.lr, save_steps=sp.save_steps, seed=seed, max_length=sp.max_length,
            callbacks=[tracking.StepLogger()], deepspeed=rp.deepspeed,
            bf16=torch.cuda.is_available())
        train_resumable(trainer, ckpt)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics["final_loss"] = float(losses[-1]) if losses else float("nan")
        if save_trained(trainer, processor, Path(sp.out_dir) / name) is None:
            return {}  # not the main process of a multi-process run
        tracking.log_metrics({k: v for k, v in metrics.items() if k not in ("arm", "seed")})
    write_metrics(f"sft/{name}", metrics)
    log.info("sft: %s", metrics)
    return metrics
