"""Prefect flow over the pipeline stages: orchestration only, no ML logic.

Each stage is a Prefect task named after the stage that runs `mmrpt.stages.<stage>.run` with
the validated params, retries failures that may pass on a second try (not bad params or bad
input: a ValueError, which ParamsError is, or a missing file), and publishes its metrics table
and MLflow run link as an artifact. One flow run = one MLflow parent run with the stage runs
nested under it.
Deployment parameters (overrides, seed, model path, working directory) go through the same
schema as params.yaml before any stage starts.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from mmrpt import tracking
from mmrpt.config import ARMS, STAGES, load_params, run_name

PER_RUN = ("rl", "sft", "eval")  # once per (arm, seed); the others once


def may_pass_on_retry(task, task_run, state) -> bool:
    """Prefect's retry condition: a ValueError (bad params or data) or a missing file fails
    the same way every time, so the stage fails at once, naming the cause."""
    try:
        state.result()
    except (ValueError, FileNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - everything else (killed worker, OOM, I/O) may pass
        return True
    return True


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=may_pass_on_retry)
def run_stage(stage: str, params_path: str, overrides: dict[str, Any], parent: str) -> dict:
    params = load_params(params_path, overrides)
    metrics = importlib.import_module(f"mmrpt.stages.{stage}").run(params)
    run_id = tracking.child_run_id(parent, stage)
    rows = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in sorted(metrics.items()))
    link = f"[MLflow run]({tracking.run_url(run_id)})" if run_id else "(no MLflow run found)"
    create_markdown_artifact(key=f"{stage}-metrics", description=f"stage {stage}",
                             markdown=f"## {stage}\n{link}\n\n| metric | value |\n|---|---|\n{rows}")
    return metrics


@flow(name="mmrpt-pipeline")
def pipeline(stages: list[str] | None = None, params_path: str = "params.yaml",
             overrides: dict[str, Any] | None = None, seed: int | None = None,
             model_path: str | None = None, workdir: str | None = None,
             arms: list[str] | None = None) -> dict[str, dict]:
    """Run ``stages`` (default: all, in order) with params.yaml plus ``overrides`` (dotted
    keys, e.g. {"warmup.max_steps": 200}); ``seed`` and ``model_path`` are shortcuts for the
    seed and model.path overrides; ``workdir`` is where params.yaml and the outputs live;
    the rl, sft and eval stages run once per arm in ``arms`` (default: all four) and seed in
    `seeds`, the report once over them."""
    if workdir:
        os.chdir(workdir)
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    if model_path is not None:
        overrides["model.path"] = model_path
    params = load_params(params_path, overrides)  # fail before any work
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES] + [a for a in arms or [] if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown stages/arms {unknown}; known: {list(STAGES)}, {list(ARMS)}")
    results = {}
    with tracking.pipeline_run(params) as parent:
        for stage in STAGES:
            if stage not in stages:
                continue
            get_run_logger().info("stage %s", stage)
            task_ = run_stage.with_options(name=stage)
            if stage in PER_RUN:
                results[stage] = {
                    run_name(arm, s): task_(stage, params_path,
                                            overrides | {"rl.arm": arm, "rl.seed": s}, parent)
                    for arm in (arms or ARMS) for s in params.seeds}
            else:
                results[stage] = task_(stage, params_path, overrides, parent)
    return results


if __name__ == "__main__":
    pipeline()
