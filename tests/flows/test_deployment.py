"""Integration: a local Prefect server and process worker run the pipeline deployment the way
users do (`prefect deploy`, `prefect deployment run`), and every process started is stopped."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from flows.pipeline import stage_threads
from mmrpt.config import DEFAULT_ARMS
from mmrpt.pipeline import NAMES, PER_RUN, PER_WORKER, stage
from tests.conftest import copy_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def prefect(args, env, timeout=180) -> str:
    out = subprocess.run(
        [str(BIN / "prefect"), *args],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_prefect_deployment_run(tmp_path: Path):
    work = copy_repo(tmp_path / "work")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MMRPT_HOME": str(ROOT),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path / "server.log",
    )
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.time() < deadline, "prefect server did not become healthy"
                time.sleep(1)
        prefect(["work-pool", "create", "mmrpt-cpu", "--type", "process"], env)
        prefect(["--no-prompt", "deploy", "--name", "embedded"], env)
        # the deployment stores no path of this machine: the worker finds its checkout
        stored = prefect(["deployment", "inspect", "mmrpt-pipeline/embedded"], env)
        assert "pull_steps" in stored and str(ROOT) not in stored
        worker = start(
            [str(BIN / "prefect"), "worker", "start", "--pool", "mmrpt-cpu"],
            env,
            tmp_path / "worker.log",
        )
        params = {
            "workdir": str(work),
            "overrides": {"warmup.max_steps": 10},
            "max_parallel": 2,  # the arms two at a time, one thread each on two cores
        }
        out = prefect(
            [
                "deployment",
                "run",
                "mmrpt-pipeline/embedded",
                "--params",
                json.dumps(params),
                "--watch",
                "--watch-timeout",
                "900",
            ],
            env,
            timeout=950,
        )
        assert "Completed" in out, out + (tmp_path / "worker.log").read_text()
    finally:
        if worker is not None:
            stop(worker)  # the worker before the server
        stop(server)
    assert server.poll() is not None and (worker is None or worker.poll() is not None)

    for name in NAMES:
        if name in PER_RUN:  # one metrics file per run: every arm ran
            assert len(list((work / "metrics" / name).glob("*-0.json"))) == 4, name
        elif name in PER_WORKER:
            assert (work / "metrics" / name / "0.json").exists(), name
        elif stage(name).metrics:
            assert (work / stage(name).metrics["metrics"]).exists(), name
        else:  # score_heads: no metrics of its own (score_merge reports them)
            assert (work / "data/scores/heads.json").exists(), name
    assert json.loads((work / "metrics/warmup.json").read_text())["steps"] == 10
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
    # the arms ran two at a time, each with its share of the cores (flows.pipeline)
    threads = os.environ.get("OMP_NUM_THREADS") or str(stage_threads(2, shares_cores=True))
    arm_runs = [r for r in runs if r.data.tags.get("stage") in PER_RUN]
    assert len(arm_runs) == 3 * len(DEFAULT_ARMS)
    assert {r.data.tags["threads"] for r in arm_runs} == {threads}
    assert children == (
        {s for s in NAMES if s not in PER_RUN + PER_WORKER}
        | {f"{s}/0" for s in PER_WORKER}
        | {f"{s}/{a}-0" for s in PER_RUN for a in DEFAULT_ARMS}
    )
