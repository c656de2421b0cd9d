"""Integration: a local Prefect server and process worker run the pipeline deployment the way
users do (`prefect deploy`, `prefect deployment run`), and every process started is stopped.
The run itself is the session's `deployed` fixture (tests/deployed.py); tests/test_dvc.py
checks what DVC makes of the same run."""

import json
import os
import subprocess

import mlflow
import pytest

from flows.pipeline import stage_threads
from mmrpt.config import DEFAULT_ARMS
from mmrpt.pipeline import NAMES, PER_RUN, PER_WORKER, stage
from tests.conftest import ROOT
from tests.deployed import BIN, PARAMS


@pytest.mark.slow
def test_prefect_deployment_run(deployed):
    work = deployed.work
    # the deployment stores no path of this machine: the worker finds its checkout
    assert "pull_steps" in deployed.stored and str(ROOT) not in deployed.stored
    assert deployed.server_stopped and deployed.worker_stopped

    for name in NAMES:
        if name in PER_RUN:  # one metrics file per run: every arm ran
            assert len(list((work / "metrics" / name).glob("*-0.json"))) == 4, name
        elif name in PER_WORKER:  # the two score workers (the score_workers param)
            for w in range(PARAMS["score_workers"]):
                assert (work / "metrics" / name / f"{w}.json").exists(), (name, w)
        elif stage(name).metrics:
            assert (work / stage(name).metrics["metrics"]).exists(), name
        else:  # score_heads: no metrics of its own (score_merge reports them)
            assert (work / "data/scores/heads.json").exists(), name
    steps = PARAMS["overrides"]["warmup.max_steps"]  # the deployment's overrides param
    assert json.loads((work / "metrics/warmup.json").read_text())["steps"] == steps
    assert (work / "data/masked/attention/train.jsonl").exists()
    # the flow ran the DVC stages: the workspace is as `dvc repro` leaves it
    status = subprocess.run(
        [str(BIN / "dvc"), "status"], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlruns/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parent) == 1
    children = {
        r.info.run_name
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id
    }
    # the arms and the score workers ran two at a time, each with its share of the cores
    # (flows.pipeline)
    threads = os.environ.get("OMP_NUM_THREADS") or str(
        stage_threads(PARAMS["max_parallel"], shares_cores=True)
    )
    shared = [r for r in runs if r.data.tags.get("stage") in PER_RUN + PER_WORKER]
    assert len(shared) == 3 * len(DEFAULT_ARMS) + PARAMS["score_workers"]
    assert {r.data.tags["threads"] for r in shared} == {threads}
    assert children == (
        {s for s in NAMES if s not in PER_RUN + PER_WORKER}
        | {f"{s}/{w}" for s in PER_WORKER for w in range(PARAMS["score_workers"])}
        | {f"{s}/{a}-0" for s in PER_RUN for a in DEFAULT_ARMS}
    )
    merged = json.loads((work / "metrics/score.json").read_text())
    scored = [
        json.loads((work / f"metrics/score/{w}.json").read_text())
        for w in range(PARAMS["score_workers"])
    ]
    assert all(m["records_scored"] > 0 for m in scored)  # each worker scored its half
    assert sum(m["records"] for m in scored) == merged["n_samples"]  # once each
