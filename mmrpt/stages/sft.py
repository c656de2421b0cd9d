"""Stage `sft`: the same supervised fine-tuning for every run (``--arm``, ``--seed``), starting
from that run's rl output; writes models/sft/<run> and metrics/sft/<run>.json. The data are
the world's train-split probes (embedded) or LLaVA-style conversations (sft.source=llava).
Runs in launch.num_processes processes; sft.batch_size is the global batch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.finetune.vqa import llava_dataset, llava_rows, make_sft_trainer, probe_rows
from mmrpt.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from mmrpt.modeling.loader import CheckpointError, load_vlm
from mmrpt.stages.common import checkpoint_dir, run_seed, train_options, warn_untracked
from mmrpt.stages.step_logger import StepLogger
from mmrpt.training import (
    SaveAtSteps,
    device,
    last_loss,
    release_training,
    save_trained,
    seed_everything,
    train_resumable,
)

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    sp = ctx.params.sft
    name, seed = ctx.run_name, run_seed(ctx)
    seed_everything(seed)
    start = ctx.dep("model")
    if not start.is_dir():
        raise CheckpointError(
            f"{start}: no rl output for run {name}; run "
            f"`python -m mmrpt rl --arm {ctx.arm} --seed {ctx.seed}`"
        )
    metrics: dict = {"arm": ctx.arm, "seed": ctx.seed, "steps": sp.steps}
    out, refused = ctx.out("model"), None
    probes_file = ctx.dep("data") / "probes" / "train.jsonl"
    if sp.source == "probes" and not probes_file.exists():
        raise ParamsError(
            "sft.source=probes needs the world's train probes and the data has none (real "
            "data): set sft.source=llava and sft.inputs to a LLaVA-style JSON"
        )
    if sp.source == "llava" and not Path(sp.inputs).is_file():
        raise ParamsError(f"sft.inputs: no such file {sp.inputs}")
    if sp.source == "llava":
        warn_untracked("sft.inputs", [sp.inputs], str(ctx.dep("inputs")))
    if sp.source == "probes":
        probes = read_jsonl(probes_file)
        n = min(len(probes), sp.steps * sp.batch_size)  # one pass over a seeded subset
        pick = np.random.default_rng(seed).permutation(len(probes))[:n]
        rows = probe_rows([probes[i] for i in sorted(pick)], ctx.dep("data"))
    else:
        rows, refused = llava_rows(
            sp.inputs,
            sp.image_root,
            max_text_chars=sp.max_text_chars,
            max_pixels=sp.max_image_pixels,
        )
        metrics |= {"n_input": refused.n_input, "n_rejected": sum(refused.reasons.values())}
        metrics |= {f"rejected/{r}": n for r, n in refused.reasons.items()}
        if not rows:
            raise ValueError(f"sft.inputs {sp.inputs}: no usable rows ({dict(refused.reasons)})")
    metrics["n_rows"] = len(rows)
    if sp.source == "llava":
        rows = llava_dataset(rows)
    model, processor = load_vlm(start, dtype=torch.float32)
    model.to(device())
    options = train_options(ctx)
    ckpt = checkpoint_dir(ctx, options)
    with tracking.stage_run(ctx, run_id_file=tracking.resume_file(ckpt)):
        trainer = make_sft_trainer(
            model,
            processor,
            rows,
            out_dir=ckpt,
            steps=sp.steps,
            batch_size=sp.batch_size,
            lr=sp.lr,
            save_steps=sp.save_steps,
            seed=seed,
            max_length=sp.max_length,
            callbacks=[StepLogger()],
            options=options,
        )
        # the budget curve: snapshots at sft.budgets steps
        trainer.add_callback(SaveAtSteps(trainer, sp.budgets, ctx.out("budgets"), processor, start))
        train_resumable(trainer, ckpt)
        metrics["final_loss"] = last_loss(trainer)
        metrics["samples_per_step"] = trainer.rows_per_step()
        saved = save_trained(trainer, processor, out, base=start)
        del trainer, model
        release_training()
        if saved is None:
            return {}  # not the main process of a multi-process run
        if refused is not None:  # beside the model: what of sft.inputs was not used, and why
            write_jsonl_atomic(saved / "rejects.jsonl", refused.rows)
        tracking.log_metrics(metrics)
        tracking.log_model(saved, f"sft-{ctx.arm}")
    write_json_atomic(ctx.table_path("metrics"), metrics)
    log.info("sft: %s", metrics)
    return metrics
