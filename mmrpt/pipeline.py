"""The pipeline, declared once: every stage's reads, inputs and outputs (mmrpt.contract.Stage).

dvc.yaml is generated from this list (``python -m mmrpt dvc-yaml``; tests/test_pipeline.py
fails on any difference), the Prefect flow reads its graph from DVC, and each stage's entry
point (mmrpt/stages/<name>.py) gets its params view and paths from its declaration here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mmrpt.contract import Stage

RUN = "${item.arm}-${item.seed}"  # one (arm, seed) replicate of a per-run stage
TRAIN_CODE = (
    "mmrpt/modeling",
    "mmrpt/training.py",
    "mmrpt/images.py",
    "mmrpt/distributed.py",
    "mmrpt/stages/common.py",
)
# how many processes run a stage: a resumed run may change them (checkpoints are kept; a
# DeepSpeed checkpoint refuses another world size with a message, mmrpt/training.py)
LAUNCH_IGNORES = (
    "launch.num_processes",
    "launch.launcher",
    "launch.backend",
    "launch.gradient_checkpointing",
)
# Real inputs live in these folders (README "Real data"): each is a dep of the stage that
# reads it, so changing a corpus file reruns data, a LLaVA file sft, a benchmark TSV eval.
INPUTS = {"corpus": "inputs/corpus", "sft": "inputs/sft", "benchmarks": "inputs/benchmarks"}

STAGES: tuple[Stage, ...] = (
    Stage(
        "data",
        reads=("seed", "data"),
        deps={"corpus": INPUTS["corpus"]},
        outs={"data": "${data.out_dir}"},
        metrics={"metrics": "metrics/data.json"},
        code=("mmrpt/data", "mmrpt/io.py", "mmrpt/stages/data.py"),
    ),
    Stage(
        "warmup",
        distributed=True,
        reads=("seed", "model", "warmup", "data.image_size", "mask.instruction", "launch"),
        deps={"data": "${data.out_dir}"},
        outs={"model": "${warmup.out_dir}", "checkpoints": "${warmup.checkpoint_dir}"},
        persist=("checkpoints",),
        metrics={"metrics": "metrics/warmup.json"},
        tables={"loss": "plots/warmup_loss.csv"},
        code=(*TRAIN_CODE, "mmrpt/pretrain", "mmrpt/stages/warmup.py"),
        resume_ignores=("warmup.eval_split", "warmup.eval_samples", *LAUNCH_IGNORES),
    ),
    Stage(
        "score_heads",
        section="score",
        reads=(
            "seed",
            "score.out_dir",
            "score.splits",
            "score.select",
            "score.top_heads",
            "score.max_top_heads",
            "score.layers",
            "score.layer_band",
            "score.heads",
            "score.text_keys",
            "score.batch_size",
            "score.diagnostic_split",
            "score.report_split",
            "score.diagnostic_samples",
            "warmup.prompt",
            "model.trust_remote_code",
        ),
        deps={"data": "${data.out_dir}", "model": "${warmup.out_dir}"},
        outs={"heads": "${score.out_dir}/heads.json"},
        code=(
            "mmrpt/modeling",
            "mmrpt/images.py",
            "mmrpt/scoring",
            "mmrpt/stages/score.py",
            "mmrpt/stages/score_heads.py",
        ),
    ),
    Stage(
        "score",
        workers="score.workers",
        distributed=True,
        reads=(
            "seed",
            "score.out_dir",
            "score.splits",
            "score.text_keys",
            "score.counterfactual",
            "score.counterfactual_train",
            "score.replacements",
            "score.counterfactual_reduce",
            "score.batch_size",
            "score.shard_size",
            "score.workers",
            "warmup.prompt",
            "model.trust_remote_code",
            "launch.num_processes",
            "launch.launcher",
            "launch.backend",
        ),
        deps={
            "data": "${data.out_dir}",
            "model": "${warmup.out_dir}",
            "heads": "${score.out_dir}/heads.json",
        },
        outs={"shards": "${score.out_dir}/workers/${item.worker}"},
        persist=("shards",),
        tables={"worker": "metrics/score/${item.worker}.json"},
        code=(
            "mmrpt/modeling",
            "mmrpt/images.py",
            "mmrpt/scoring",
            "mmrpt/distributed.py",
            "mmrpt/stages/common.py",
            "mmrpt/stages/score.py",
        ),
        # a finished shard is kept when only these change (they choose what to report, which
        # heads (heads.json, an input, says), or who computes it)
        resume_ignores=(
            "score.splits",
            "score.workers",
            "launch.num_processes",
            "launch.launcher",
            "launch.backend",
        ),
    ),
    Stage(
        "score_merge",
        section="score",
        reads=(
            "score.out_dir",
            "score.workers",
            "score.counterfactual",
            "score.diagnostic_split",
            "score.report_split",
        ),
        deps={"workers": "${score.out_dir}/workers", "heads": "${score.out_dir}/heads.json"},
        outs={"scores": "${score.out_dir}/scores.parquet", "plots": "${score.out_dir}/plots"},
        metrics={"metrics": "metrics/score.json"},
        tables={"layers": "plots/score_layers.csv"},
        code=(
            "mmrpt/scoring/layers.py",
            "mmrpt/scoring/shards.py",
            "mmrpt/report/plots.py",
            "mmrpt/stages/score_merge.py",
        ),
    ),
    Stage(
        "mask",
        reads=("seed", "mask"),
        deps={"data": "${data.out_dir}", "scores": "${score.out_dir}/scores.parquet"},
        outs={"masks": "${mask.out_dir}"},
        metrics={"metrics": "metrics/mask.json"},
        code=("mmrpt/masking", "mmrpt/report/gallery.py", "mmrpt/stages/mask.py"),
    ),
    Stage(
        "primer",
        distributed=True,
        reads=(
            "seed",
            "primer",
            "mask.selectors",
            "warmup.prompt",
            "model.trust_remote_code",
            "launch",
        ),
        deps={"data": "${data.out_dir}", "model": "${warmup.out_dir}", "masks": "${mask.out_dir}"},
        outs={"model": "${primer.out_dir}", "checkpoints": "${primer.checkpoint_dir}"},
        persist=("checkpoints",),
        metrics={"metrics": "metrics/primer.json"},
        headline="metrics/run/primer.json",
        code=(*TRAIN_CODE, "mmrpt/generation.py", "mmrpt/rl/fillin.py", "mmrpt/stages/primer.py"),
        resume_ignores=(
            "primer.eval_split",
            "primer.eval_samples",
            "primer.max_new_tokens",
            "warmup.prompt",
            *LAUNCH_IGNORES,
        ),
    ),
    Stage(
        "rl",
        per_run=True,
        distributed=True,
        reads=(
            "seed",
            "rl",
            "arms.${item.arm}",
            "primer.n_samples",
            "primer.max_new_tokens",
            "mask.selectors",
            "warmup.prompt",
            "launch",
        ),
        deps={"data": "${data.out_dir}", "masks": "${mask.out_dir}", "model": "${primer.out_dir}"},
        outs={"model": "${rl.out_dir}/" + RUN, "checkpoints": "${rl.checkpoint_dir}/" + RUN},
        persist=("checkpoints",),
        tables={"metrics": "metrics/rl/" + RUN + ".json", "curve": "plots/rl/" + RUN + ".csv"},
        code=(
            *TRAIN_CODE,
            "mmrpt/generation.py",
            "mmrpt/pretrain",
            "mmrpt/rl",
            "mmrpt/stages/rl.py",
        ),
        resume_ignores=(
            "rl.eval_splits",
            "rl.eval_samples",
            "primer.max_new_tokens",
            *LAUNCH_IGNORES,
        ),
    ),
    Stage(
        "sft",
        per_run=True,
        distributed=True,
        reads=("seed", "sft", "launch"),
        deps={"data": "${data.out_dir}", "model": "${rl.out_dir}/" + RUN, "inputs": INPUTS["sft"]},
        outs={
            "model": "${sft.out_dir}/" + RUN,
            "budgets": "${sft.out_dir}-budgets/" + RUN,  # snapshots at sft.budgets steps
            "checkpoints": "${sft.checkpoint_dir}/" + RUN,
        },
        persist=("checkpoints",),
        tables={"metrics": "metrics/sft/" + RUN + ".json"},
        code=(*TRAIN_CODE, "mmrpt/finetune", "mmrpt/stages/sft.py"),
        resume_ignores=LAUNCH_IGNORES,
    ),
    Stage(
        "eval",
        per_run=True,
        reads=(
            "eval",
            "warmup.prompt",
            "primer.max_new_tokens",
            "mask.selectors",
            "rl.eval_splits",
            "rl.eval_samples",
            "model.trust_remote_code",
            "mask.instruction",
            "mask.think",
            "sft.budgets",
            "sft.steps",
        ),
        deps={
            "data": "${data.out_dir}",
            "masks": "${mask.out_dir}",
            "zero_shot": "${rl.out_dir}/" + RUN,
            "sft": "${sft.out_dir}/" + RUN,
            "budgets": "${sft.out_dir}-budgets/" + RUN,
            "rl_metrics": "metrics/rl/" + RUN + ".json",
            "benchmarks": INPUTS["benchmarks"],
        },
        # lm-eval / VLMEvalKit raw files (timestamped): kept for resume, not versioned
        scratch={"eval": "${eval.out_dir}/" + RUN},
        outs={"outcomes": "${eval.out_dir}/outcomes/" + RUN + ".parquet"},  # eval.outcomes
        tables={"metrics": "metrics/eval/" + RUN + ".json"},
        headline="metrics/run/" + RUN + ".json",
        code=(
            "mmrpt/modeling",
            "mmrpt/images.py",
            "mmrpt/generation.py",
            "mmrpt/evaluation",
            "mmrpt/rl/fillin.py",
            "mmrpt/report/headline.py",
            "mmrpt/stages/eval.py",
        ),
    ),
    Stage(
        "report",
        reads=("seeds", "arms"),
        deps={
            "eval": "metrics/eval",
            "rl": "metrics/rl",
            "primer": "metrics/primer.json",
            "curves": "plots/rl",
        },
        outs={"report": "${report.out_dir}"},
        metrics={"metrics": "metrics/report.json", "rl": "metrics/rl.json"},
        tables={"accuracy": "plots/report_accuracy.csv"},
        code=("mmrpt/report", "mmrpt/stages/report.py"),
    ),
)

NAMES = tuple(s.name for s in STAGES)
PER_RUN = tuple(s.name for s in STAGES if s.per_run)
PER_WORKER = tuple(s.name for s in STAGES if s.workers)

# How `dvc plots show` draws each plot file (titles and axes named; each file drawn once).
PLOTS: dict[str, dict[str, Any]] = {
    "plots/warmup_loss.csv": {
        "x": "step",
        "y": "loss",
        "title": "warmup caption loss",
        "x_label": "optimizer step",
        "y_label": "loss (nats/token)",
    },
    "plots/score_layers.csv": {
        "x": "layer",
        "y": ["auroc_dev", "auroc_report"],
        "title": "AUROC of D_vis per decoder layer (all heads)",
        "x_label": "decoder layer",
        "y_label": "AUROC",
    },
    "plots/rl": {
        "x": "step",
        "y": "loss",
        "title": "training loss per step of one arm run (plots/rl/<arm>-<seed>.csv)",
        "x_label": "optimizer step",
        "y_label": "loss",
    },
    "plots/report_accuracy.csv": {
        "x": "mean",
        "y": "label",
        "template": "bar_horizontal",
        "title": "counter-prior probe accuracy per arm and phase (mean over seeds)",
        "x_label": "accuracy",
        "y_label": "",
    },
}


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}")


def _dvc_params(s: Stage) -> list[str]:
    return list(s.reads)


def dvc_stage(s: Stage) -> dict[str, Any]:
    """One stage of dvc.yaml from its declaration."""
    d: dict[str, Any] = {}
    if s.matrix:
        d["matrix"] = s.matrix
    d["cmd"] = s.cmd()
    d["deps"] = [*s.deps.values(), *s.code]
    d["params"] = _dvc_params(s)
    d["outs"] = [{p: {"persist": True}} if n in s.persist else p for n, p in s.outs.items()]
    d["outs"] += [{p: {"cache": False}} for p in (*s.metrics.values(), *s.tables.values())]
    if s.headline:
        d["metrics"] = [{s.headline: {"cache": False}}]
    return d


HEADER = """\
# GENERATED from mmrpt/pipeline.py by `python -m mmrpt dvc-yaml`: edit the declarations there.
# Stage names = params.yaml sections = CLI subcommands = MLflow run names = Prefect tasks.
"""


def dvc_yaml() -> str:
    """The text of dvc.yaml."""
    doc = {
        "plots": [{k: v} for k, v in PLOTS.items()],
        "stages": {s.name: dvc_stage(s) for s in STAGES},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


def write_dvc_yaml(path: str | Path = "dvc.yaml") -> Path:
    path = Path(path)
    path.write_text(dvc_yaml())
    return path


def context(
    name: str, params, arm: str | None = None, seed: int | None = None, worker: int | None = None
):
    """The StageContext of stage ``name`` (and run ``arm``, ``seed`` for a per-run stage,
    ``worker`` for a per-worker stage)."""
    from mmrpt.config import ParamsError
    from mmrpt.contract import ParamsView, StageContext, values

    s = stage(name)
    if s.workers:
        ids = values(params, [s.workers])[s.workers]
        if worker is None:
            raise ParamsError(f"stage {name} runs once per worker: give --worker (one of {ids})")
        if worker not in ids:
            raise ParamsError(f"--worker {worker}: not in {s.workers} {ids}")
    elif worker is not None:
        raise ParamsError(f"stage {name} has no workers: --worker does not apply")
    if s.per_run:
        if arm is None or seed is None:
            raise ParamsError(f"stage {name} runs once per arm and seed: give --arm and --seed")
        if arm not in params.arms:
            raise ParamsError(f"--arm {arm}: not in arms ({', '.join(params.arms)})")
        if not 0 <= seed <= 1000:
            raise ParamsError(f"--seed {seed}: must be in 0..1000 (as the seeds param)")
    elif arm is not None or seed is not None:
        raise ParamsError(f"stage {name} runs once: --arm/--seed do not apply")
    ctx = StageContext(s, None, params, arm, seed, worker)
    ctx.params = ParamsView(params, ctx.reads, name)
    return ctx
