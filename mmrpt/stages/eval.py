"""Stage `eval`: one run (rl.arm, rl.seed) evaluated zero-shot (its rl output) and after SFT
(its sft output): the scene probes through lm-eval (which of the options' caption sentences
is most likely as the description of the image: no question-answering skill needed, so it is
meaningful zero-shot) and VLMEvalKit (generate an answer to the question, exact matching:
the form SFT teaches), each also with the image blanked (vision reliance = accuracy with the
image minus blanked), plus held-out masked-span exact match. Each (phase) result is
kept under eval/<run>/<phase>/ with a fingerprint, so a rerun after a crash skips finished
phases. Writes metrics/eval/<run>.json with keys "<phase>/<harness>/<split>[/<type>]/acc"."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.modeling.loader import CheckpointError, load_vlm
from mmrpt.rl.fillin import fillin_exact_match, read_samples
from mmrpt.stages.common import (
    METRICS_DIR,
    device,
    fingerprint_dir,
    params_hash,
    weights_stamp,
    write_json_atomic,
    write_metrics,
)
from mmrpt.stages.primer import masked_path

log = logging.getLogger(__name__)


def reliance(results: dict[str, float]) -> dict[str, float]:
    """'<h>/<split>/reliance' = '<h>/<split>/acc' - '<h>/<split>_blank/acc' where both exist."""
    out = {}
    for key, acc in results.items():
        head, _, tail = key.partition("/")
        split, _, rest = tail.partition("/")
        blank = f"{head}/{split}_blank/{rest}"
        if not split.endswith("_blank") and blank in results:
            metric = rest.removesuffix("acc") + "reliance"
            out[f"{head}/{split}/{metric}"] = acc - results[blank]
    return out


def evaluate_model(params: Params, model_path: Path, out: Path,
                   masked_em: bool = True) -> dict[str, float]:
    from mmrpt.evaluation.lmeval import run_lmeval
    from mmrpt.evaluation.scorer import Scorer
    from mmrpt.evaluation.vlmevalkit import run_vlmevalkit

    ep, root = params.eval, Path(params.data.out_dir)
    model, processor = load_vlm(model_path, dtype=torch.float32,
                                trust_remote_code=params.model.trust_remote_code)
    model.to(device())
    scorer = Scorer(model, processor)  # one model for both harnesses
    results: dict[str, float] = {}
    if "lmeval" in ep.harnesses:
        results |= run_lmeval(model_path, root, ep.splits, out / "lmeval", limit=ep.limit,
                              blank=ep.blank, answerer=scorer, form="statement",
                              prompt=params.warmup.prompt)
    if "vlmevalkit" in ep.harnesses:
        results |= run_vlmevalkit(model_path, root, ep.splits, out / "vlmevalkit",
                                  limit=ep.limit, blank=ep.blank, answerer=scorer,
                                  datasets=ep.vlmevalkit_datasets)
    results |= reliance(results)
    if ep.masked_samples and masked_em:
        for split in ep.splits:
            held_out = read_samples(masked_path(params, params.mask.selectors[0], split))
            results[f"masked_em/{split}"], _ = fillin_exact_match(
                model, processor, held_out[: ep.masked_samples], root,
                params.primer.max_new_tokens)
    return results


def masked_em_of_rl(params: Params) -> dict[str, float]:
    """The rl stage's held-out masked-span EM of this run ({"masked_em/<split>": ...})."""
    rp = params.rl
    path = METRICS_DIR / "rl" / f"{rp.run_name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: run the rl stage for {rp.run_name} first")
    m = json.loads(path.read_text())
    if rp.eval_samples != params.eval.masked_samples:
        log.warning("rl.eval_samples=%d differs from eval.masked_samples=%d: zero-shot and "
                    "after-SFT masked EM use different sample counts", rp.eval_samples,
                    params.eval.masked_samples)
    out = {}
    for split in params.eval.splits:
        key = "exact_match" if split == rp.eval_splits[0] else f"exact_match_{split}"
        if key in m:
            out[f"masked_em/{split}"] = m[key]
    return out


def run(params: Params) -> dict:
    rp, ep = params.rl, params.eval
    name = rp.run_name
    phases = {"zero_shot": Path(rp.out_dir) / name, "sft": Path(params.sft.out_dir) / name}
    metrics: dict = {"arm": rp.arm, "seed": rp.seed}
    with tracking.stage_run("eval", params):
        tracking.set_tags({"arm": rp.arm, "replicate": str(rp.seed), "run": name})
        for phase, path in phases.items():
            if not path.is_dir():
                raise CheckpointError(f"{path}: no model for run {name} ({phase}); run the "
                                      f"{'rl' if phase == 'zero_shot' else 'sft'} stage first")
            out = fingerprint_dir(Path(ep.out_dir) / name / phase, params_hash(
                ep, params.data, params.mask.selectors[0], weights_stamp(path)))
            done = out / "metrics.json"
            if done.exists():
                log.info("eval %s %s: finished earlier, reusing %s", name, phase, done)
                results = json.loads(done.read_text())
            else:
                # zero-shot masked-span EM was measured by the rl stage on the same samples
                results = evaluate_model(params, path, out, masked_em=phase == "sft")
                write_json_atomic(done, results)
            if phase == "zero_shot" and ep.masked_samples:
                results |= masked_em_of_rl(params)
            metrics |= {f"{phase}/{k}": v for k, v in results.items()}
        tracking.log_metrics({k: v for k, v in metrics.items() if k not in ("arm", "seed")})
    write_metrics(f"eval/{name}", metrics)
    log.info("eval %s: %s", name, {k: round(v, 3) for k, v in metrics.items()
                                   if isinstance(v, float) and k.count("/") <= 3})
    return metrics
