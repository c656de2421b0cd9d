"""Prefect flow over the pipeline stages: orchestration only, no ML logic.

Each stage is a Prefect task named after the stage that runs `mmrpt.stages.<stage>.run` with
the validated params, retries transient failures, and publishes its metrics as a table
artifact. Params overrides arrive as deployment parameters and go through the same schema as
params.yaml before any stage starts.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from mmrpt.config import STAGES, load_params


@task(retries=2, retry_delay_seconds=10)
def run_stage(stage: str, params_path: str, overrides: dict[str, Any]) -> dict:
    params = load_params(params_path, overrides)
    metrics = importlib.import_module(f"mmrpt.stages.{stage}").run(params)
    rows = [{"metric": k, "value": v} for k, v in sorted(metrics.items())]
    create_table_artifact(key=f"{stage}-metrics", table=rows,
                          description=f"metrics of stage {stage}")
    return metrics


@flow(name="mmrpt-pipeline")
def pipeline(stages: list[str] | None = None, params_path: str = "params.yaml",
             overrides: dict[str, Any] | None = None) -> dict[str, dict]:
    """Run ``stages`` (default: all, in order) with params.yaml plus ``overrides``
    (a mapping of dotted keys to values, e.g. {"warmup.max_steps": 200})."""
    overrides = overrides or {}
    load_params(params_path, overrides)  # fail before any work
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {list(STAGES)}")
    results = {}
    for stage in STAGES:
        if stage in stages:
            get_run_logger().info("stage %s", stage)
            results[stage] = run_stage.with_options(name=stage)(stage, params_path, overrides)
    return results


if __name__ == "__main__":
    pipeline()
