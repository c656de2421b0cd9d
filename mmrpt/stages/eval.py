"""Stage `eval`: one run (``--arm``, ``--seed``) evaluated zero-shot (its rl output) and after SFT
(its sft output): the scene probes through lm-eval (which of the options' caption sentences
is most likely as the description of the image: no question-answering skill needed, so it is
meaningful zero-shot) and VLMEvalKit (generate an answer to the question, exact matching:
the form SFT teaches), each also with the image blanked (vision reliance = accuracy with the
image minus blanked), plus held-out masked-span exact match. Each (phase) result is
kept under eval/<run>/<phase>/ with a fingerprint, so a rerun after a crash skips finished
phases. Writes metrics/eval/<run>.json with keys "<phase>/<harness>/<split>[/<type>]/acc".

Real data: the probes run only on eval.splits that have them (the world's); real benchmarks
(eval.vlmevalkit_datasets) are read from eval.benchmarks_dir (default $LMUData), as they are
with eval.benchmarks_local. A benchmark that fails is listed under "<phase>/failed" (name ->
error) and the other results are kept. Everything a phase needs is checked before any work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.io import fingerprint_dir, inputs_stamp, write_json_atomic, write_parquet_atomic
from mmrpt.masking.samples import read_samples, samples_path
from mmrpt.modeling.loader import CheckpointError, load_vlm
from mmrpt.report.headline import run_headline
from mmrpt.rl.fillin import fillin_exact_match
from mmrpt.training import device

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


def benchmark_stamp(folder: str | None, names: list[str]) -> str:
    from mmrpt.evaluation.vlmevalkit import benchmark_dir

    return inputs_stamp(benchmark_dir(folder) / f"{n}.tsv" for n in names)


def probe_splits(root: Path, splits: list[str]) -> list[str]:
    """The eval splits that have the world's probes (real data has none)."""
    return [s for s in splits if (root / "probes" / f"{s}.jsonl").exists()]


def check(ctx: StageContext) -> None:
    """Before any work: the splits, masks, probes and benchmark files the phases need."""
    from mmrpt.evaluation.vlmevalkit import benchmark_dir
    from mmrpt.stages.common import require_masks, require_splits, warn_untracked

    p = ctx.params
    ep, root = p.eval, ctx.dep("data")
    require_splits(root, "eval.splits", ep.splits)
    if ep.masked_samples:
        require_masks(ctx.dep("masks"), p.mask.selectors[0], {"eval.splits": ep.splits})
    probes = probe_splits(root, ep.splits)
    if "lmeval" in ep.harnesses and not probes:
        raise ParamsError(
            "eval.harnesses: lmeval runs the world's probes and the data has none for "
            f"eval.splits {ep.splits}: remove lmeval (real benchmarks go through vlmevalkit)"
        )
    if "vlmevalkit" in ep.harnesses and not probes and not ep.vlmevalkit_datasets:
        raise ParamsError(
            "eval.vlmevalkit_datasets: nothing to evaluate (no probes in the data): name the "
            "benchmarks, e.g. [MMStar]"
        )
    bench = benchmark_dir(ep.benchmarks_dir)
    if ep.vlmevalkit_datasets and bench is None:
        raise ParamsError("eval.benchmarks_dir: set it (or $LMUData) to the benchmark folder")
    if ep.vlmevalkit_datasets:
        files = [str(bench / f"{n}.tsv") for n in ep.vlmevalkit_datasets]
        warn_untracked("eval.benchmarks_dir", files, str(ctx.dep("benchmarks")))
    if ep.vlmevalkit_datasets and ep.benchmarks_local:
        missing = [n for n in ep.vlmevalkit_datasets if not (bench / f"{n}.tsv").is_file()]
        if missing:
            raise ParamsError(
                f"eval.vlmevalkit_datasets: no {', '.join(f'{n}.tsv' for n in missing)} in "
                f"eval.benchmarks_dir ({bench}); with eval.benchmarks_local nothing is downloaded"
            )


def evaluate_model(
    ctx: StageContext, model_path: Path, out: Path, masked_em: bool = True
) -> dict[str, float]:
    from mmrpt.evaluation.lmeval import run_lmeval
    from mmrpt.evaluation.scorer import Scorer
    from mmrpt.evaluation.vlmevalkit import run_vlmevalkit

    p = ctx.params
    ep, root = p.eval, ctx.dep("data")
    probes = probe_splits(root, ep.splits)
    model, processor = load_vlm(
        model_path, dtype=torch.float32, trust_remote_code=p.model.trust_remote_code
    )
    model.to(device())
    scorer = Scorer(model, processor)  # one model for both harnesses
    results: dict = {}
    failed: dict[str, str] = {}
    if "lmeval" in ep.harnesses:
        results |= run_lmeval(
            model_path,
            root,
            probes,
            out / "lmeval",
            limit=ep.limit,
            blank=ep.blank,
            answerer=scorer,
            form="statement",
            prompt=p.warmup.prompt,
        )
    if "vlmevalkit" in ep.harnesses:
        results |= run_vlmevalkit(
            model_path,
            root,
            probes,
            out / "vlmevalkit",
            limit=ep.limit,
            blank=ep.blank,
            answerer=scorer,
            datasets=ep.vlmevalkit_datasets,
            lmu_data=ep.benchmarks_dir,
            benchmarks_local=ep.benchmarks_local,
            failures=failed,
        )
    results |= reliance(results)
    if failed:
        results["failed"] = failed
    if ep.masked_samples and masked_em:
        for split in ep.splits:
            held_out = read_samples(samples_path(ctx.dep("masks"), p.mask.selectors[0], split))
            results[f"masked_em/{split}"], _ = fillin_exact_match(
                model, processor, held_out[: ep.masked_samples], root, p.primer.max_new_tokens
            )
    return results


def masked_em_of_rl(ctx: StageContext) -> dict[str, float]:
    """The rl stage's held-out masked-span EM of this run ({"masked_em/<split>": ...})."""
    p, rp = ctx.params, ctx.params.rl
    path = ctx.dep("rl_metrics")
    if not path.exists():
        raise FileNotFoundError(f"{path}: run the rl stage for {ctx.run_name} first")
    m = json.loads(path.read_text())
    if rp.eval_samples != p.eval.masked_samples:
        log.warning(
            "rl.eval_samples=%d differs from eval.masked_samples=%d: zero-shot and "
            "after-SFT masked EM use different sample counts",
            rp.eval_samples,
            p.eval.masked_samples,
        )
    out = {}
    for split in p.eval.splits:
        key = "exact_match" if split == rp.eval_splits[0] else f"exact_match_{split}"
        if key in m:
            out[f"masked_em/{split}"] = m[key]
    return out


def write_outcomes(ctx: StageContext) -> dict[str, float]:
    """Per-probe outcome tables (mmrpt.evaluation.probe_outcomes) of the zero-shot model, the
    final SFT model and each sft.budgets snapshot, as one parquet table (columns phase, steps,
    form, ...); each model's table is kept in the scratch folder, so a rerun after a crash
    scores only what is missing. Returns the zero-shot primary numbers."""
    import pandas as pd

    from mmrpt.evaluation.probe_outcomes import headline, score_model
    from mmrpt.evaluation.scorer import Scorer

    p = ctx.params
    ep, root = p.eval, ctx.dep("data")
    splits = probe_splits(root, ep.splits)
    models = [("zero_shot", 0, ctx.dep("zero_shot"))]
    models += [("sft", k, ctx.dep("budgets") / str(k)) for k in p.sft.budgets]
    models.append(("sft", p.sft.steps, ctx.dep("sft")))
    frames = []
    for phase, steps, path in models:
        cache = fingerprint_dir(
            ctx.scratch("eval") / f"outcomes-{phase}-{steps}",
            ctx.fingerprint(phase, steps, inputs=["data"]) + inputs_stamp([path]),
        )
        table_file = cache / "outcomes.parquet"
        if not table_file.exists():
            scorer = Scorer.load(path, trust_remote_code=p.model.trust_remote_code)
            table = score_model(
                scorer,
                root,
                splits,
                ep.outcome_forms,
                instruction=p.mask.instruction,
                think=p.mask.think,
                limit=ep.outcome_limit,
            )
            write_parquet_atomic(table_file, table)
        frames.append(pd.read_parquet(table_file).assign(phase=phase, steps=steps))
    outcomes = pd.concat(frames, ignore_index=True)
    write_parquet_atomic(ctx.out("outcomes"), outcomes)
    return {f"zero_shot/{k}": v for k, v in headline(frames[0]).items()}


def run(ctx: StageContext) -> dict:
    ep, name = ctx.params.eval, ctx.run_name
    check(ctx)
    # a changed benchmark file re-evaluates the phases (wherever eval.benchmarks_dir points)
    bench = (
        [benchmark_stamp(ep.benchmarks_dir, ep.vlmevalkit_datasets)]
        if ep.vlmevalkit_datasets
        else []
    )
    metrics: dict = {"arm": ctx.arm, "seed": ctx.seed}
    with tracking.stage_run(ctx):
        for phase in ("zero_shot", "sft"):
            path = ctx.dep(phase)
            if not path.is_dir():
                raise CheckpointError(
                    f"{path}: no model for run {name} ({phase}); run the "
                    f"{'rl' if phase == 'zero_shot' else 'sft'} stage first"
                )
            out = fingerprint_dir(
                ctx.scratch("eval") / phase,
                ctx.fingerprint(phase, *bench, inputs=["data", "masks", phase]),
            )
            done = out / "metrics.json"
            if done.exists():
                log.info("eval %s %s: finished earlier, reusing %s", name, phase, done)
                results = json.loads(done.read_text())
            else:
                # zero-shot masked-span EM was measured by the rl stage on the same samples
                results = evaluate_model(ctx, path, out, masked_em=phase == "sft")
                write_json_atomic(done, results)
            if phase == "zero_shot" and ep.masked_samples:
                results |= masked_em_of_rl(ctx)
            metrics |= {f"{phase}/{k}": v for k, v in results.items()}
        if ep.outcomes:
            metrics |= write_outcomes(ctx)
        else:  # the declared output, empty
            import pandas as pd

            write_parquet_atomic(ctx.out("outcomes"), pd.DataFrame())
        tracking.log_metrics(metrics)
    write_json_atomic(ctx.table_path("metrics"), metrics)
    write_json_atomic(ctx.headline_path(), run_headline(metrics))
    log.info(
        "eval %s: %s",
        name,
        {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float) and k.count("/") <= 3},
    )
    return metrics
