"""Stage `rl`: one arm of the comparison, from the shared primer, at equal compute.

Every arm runs rl.steps optimizer steps on rl.batch_size samples per step, drawn from the
masked train samples the primer did not see:
- ntp         : caption next-token prediction on those samples' captions (HF Trainer);
- masked_sft  : supervised fill-in of the same masked samples (imitation);
- random_mask : GRPO on randomly chosen masks of the same captions;
- mmrpt       : GRPO on the attention-selected masks with the full reward.
Then held-out masked-span exact match on rl.eval_splits (the primary masks, the same for all
arms). One run = one replicate (rl.arm, rl.seed), named "<arm>-<seed>": writes
models/rl/<run>, metrics/rl/<run>.json and refreshes metrics/rl.json (every arm so far, mean
over its seeds).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.data.records import read_manifest
from mmrpt.modeling.loader import load_vlm
from mmrpt.pretrain.warmup import CaptionDataset, make_trainer
from mmrpt.rl.fillin import FillInDataset, fillin_exact_match, read_samples
from mmrpt.rl.grpo import grpo_dataset, make_grpo_trainer
from mmrpt.stages.common import (
    METRICS_DIR,
    PLOTS_DIR,
    device,
    fingerprint_dir,
    params_hash,
    run_seed,
    save_trained,
    seed_everything,
    train_resumable,
    write_csv_atomic,
    write_json_atomic,
    write_metrics,
)
from mmrpt.stages.primer import masked_path

log = logging.getLogger(__name__)


def collect_rl_metrics(seeds: list[int]) -> dict:
    """metrics/rl.json: {arm: {"exact_match": mean over seeds, ..., "seeds": {seed: ...}}}
    for every arm run so far (replicates in ``seeds`` only), plus the two baselines."""
    out: dict = {}
    primer = METRICS_DIR / "primer.json"
    if primer.exists():
        p = json.loads(primer.read_text())
        out["warmup_exact_match"] = p.get("warmup_exact_match")
        out["primer_exact_match"] = p.get("primer_exact_match")
    runs = [json.loads(f.read_text()) for f in sorted((METRICS_DIR / "rl").glob("*.json"))]
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = {r["seed"]: r for r in runs if r["arm"] == arm and r.get("seed") in seeds}
        if not mine:
            continue
        keys = [k for k, v in next(iter(mine.values())).items()
                if k.startswith("exact_match") and isinstance(v, float)]
        out[arm] = {k: sum(r[k] for r in mine.values()) / len(mine) for k in keys}
        out[arm]["seeds"] = {str(s): {k: r[k] for k in keys} for s, r in sorted(mine.items())}
    return out


def run(params: Params) -> dict:
    rp = params.rl
    arm, name, seed = rp.arm, rp.run_name, run_seed(params)
    seed_everything(seed)
    root = Path(params.data.out_dir)
    primary = params.mask.selectors[0]
    selector = "random" if arm == "random_mask" else primary
    samples = read_samples(masked_path(params, selector, "train"))[params.primer.n_samples :]
    if not samples:
        raise ValueError(f"no masked train samples left after the primer's "
                         f"{params.primer.n_samples}: lower primer.n_samples")
    model, processor = load_vlm(params.primer.out_dir, dtype=torch.float32)
    model.to(device())
    ckpt = fingerprint_dir(Path(rp.checkpoint_dir) / name, params_hash(
        params.seed, params.data, params.model, params.warmup, params.score, params.mask,
        params.primer, rp.model_dump(exclude={"eval_splits", "eval_samples", "seeds"})))
    bf16 = torch.cuda.is_available()
    common = dict(out_dir=ckpt, max_steps=rp.steps, batch_size=rp.batch_size, lr=rp.sft_lr,
                  weight_decay=0.0, warmup_ratio=0.0, save_steps=rp.save_steps,
                  save_total_limit=2, log_steps=5, seed=seed,
                  callbacks=[tracking.StepLogger()], deepspeed=rp.deepspeed, bf16=bf16)
    with tracking.stage_run("rl", params, run_id_file=ckpt / "mlflow_run_id.txt"):
        tracking.set_tags({"arm": arm, "replicate": str(rp.seed), "run": name})
        if arm == "ntp":
            by_id = {r.id: r for r in read_manifest(root / "train.jsonl")}
            records = [by_id[s["id"]] for s in samples]
            trainer = make_trainer(model, processor,
                                   CaptionDataset(records, root, processor, params.warmup.prompt),
                                   **common)
        elif arm == "masked_sft":
            trainer = make_trainer(model, processor, FillInDataset(samples, root, processor),
                                   **common)
        else:
            trainer = make_grpo_trainer(
                model, processor, grpo_dataset(samples, root), out_dir=ckpt, steps=rp.steps,
                batch_size=rp.batch_size, num_generations=rp.num_generations,
                temperature=rp.temperature, lr=rp.lr, beta=rp.beta, loss_type=rp.loss_type,
                max_completion_length=rp.max_completion_length,
                reward_weights=rp.reward_weights, save_steps=rp.save_steps, seed=seed,
                callbacks=[tracking.StepLogger()], deepspeed=rp.deepspeed, bf16=bf16,
                log_completions_steps=rp.log_completions_steps)
        train_resumable(trainer, ckpt)
        write_csv_atomic(PLOTS_DIR / "rl" / f"{name}.csv", [
            {"step": h["step"], **{k: v for k, v in h.items()
                                   if isinstance(v, int | float) and k not in ("step", "epoch")}}
            for h in trainer.state.log_history if "loss" in h or "reward" in h],
            columns=["step", "loss"])
        processor.tokenizer.padding_side = "right"
        out = save_trained(trainer, processor, Path(rp.out_dir) / name)
        if out is None:  # not the main process of a multi-process run
            return {}
        del trainer, model
        model, processor = load_vlm(out, dtype=torch.float32)  # evaluate what was saved
        model.to(device())
        metrics: dict = {"arm": arm, "seed": rp.seed, "steps": rp.steps,
                         "train_samples": len(samples)}
        for split in rp.eval_splits:
            held_out = read_samples(masked_path(params, primary, split))[: rp.eval_samples]
            em, _ = fillin_exact_match(model, processor, held_out, root,
                                       params.primer.max_new_tokens)
            metrics["exact_match" if split == rp.eval_splits[0] else f"exact_match_{split}"] = em
        tracking.log_metrics({k: v for k, v in metrics.items() if k not in ("arm", "seed")})
    write_metrics(f"rl/{name}", metrics)
    write_json_atomic(METRICS_DIR / "rl.json", collect_rl_metrics(params.seeds))
    log.info("rl: %s", metrics)
    return metrics
