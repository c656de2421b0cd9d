"""The one module that talks to MLflow.

Each stage is one MLflow run named after the stage, in a SQLite store under mlruns/ (artifacts
beside it). Training loops report through `StepLogger`, a transformers callback, so metrics are
logged per step. A resumed stage continues its MLflow run: the run id is kept in the stage's
checkpoint folder.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from transformers import TrainerCallback

from mmrpt.config import Params

log = logging.getLogger(__name__)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def configure(params: Params) -> str:
    """Point MLflow at the project's store; return the experiment id."""
    t = params.tracking
    if t.tracking_uri.startswith("sqlite:///"):
        Path(t.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(t.tracking_uri)
    exp = mlflow.get_experiment_by_name(t.experiment)
    if exp is not None:
        return exp.experiment_id
    location = Path(t.artifact_root).resolve()
    location.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(t.experiment, artifact_location=location.as_uri())


@contextmanager
def stage_run(stage: str, params: Params, run_id_file: Path | None = None) -> Iterator[str]:
    """An MLflow run for one stage, logging its params section; yields the run id.

    With ``run_id_file``, a run id found there is resumed and a new one is written there.
    """
    experiment_id = configure(params)
    run_id = None
    if run_id_file is not None and run_id_file.exists():
        run_id = run_id_file.read_text().strip() or None
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_id=run_id, run_name=stage, experiment_id=experiment_id,
                          nested=nested) as run:
        if run_id is None:
            section = getattr(params, stage, None)
            logged = {"seed": params.seed, "model.path": params.model.path or "tiny"}
            if section is not None:
                logged |= _flatten(section.model_dump(), f"{stage}.")
            mlflow.log_params(logged)
            mlflow.set_tag("stage", stage)
        if run_id_file is not None:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(run.info.run_id)
        yield run.info.run_id


def metric_name(key: str) -> str:
    """MLflow allows only alphanumerics and _ - . space : / in metric names."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    numeric = {metric_name(k): float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    mlflow.log_metrics(numeric, step=step)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


def log_dict(d: dict, name: str) -> None:
    mlflow.log_text(json.dumps(d, indent=2, default=str), name)


class StepLogger(TrainerCallback):
    """Sends the Trainer's logs (loss, lr, grad norm, ...) to the active MLflow run per step."""

    def __init__(self, prefix: str = "train/"):
        self.prefix = prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            log_metrics({self.prefix + k: v for k, v in logs.items()}, step=state.global_step)
