"""The tiny pipeline run once, the way users run the deployment: a local Prefect server and
process worker, `prefect deploy`, `prefect deployment run` (README). Two tests read the one
run: tests/flows/test_deployment.py (what Prefect did) and tests/test_dvc.py (what DVC makes
of it, on a copy: up to date, `dvc exp run`, metrics). The flow runs DVC's own graph, one
`dvc repro --single-item` per stage, so a second full `dvc repro` from scratch would repeat
the same stages in the same order (~6 minutes of a 2-core machine)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, copy_repo

BIN = Path(sys.executable).parent
# what the deployment run is given: warmup shortened (the overrides param), scoring split over
# two workers (score@0, score@1, run side by side) and the arms two at a time, one thread each
# on two cores
PARAMS = {"overrides": {"warmup.max_steps": 10}, "score_workers": 2, "max_parallel": 2}
# a hang guard, not a speed check: the run takes ~6 minutes on a quiet 2-core machine and
# over 15 beside another test process and a study
TIMEOUT = 2400


@dataclass
class Deployed:
    work: Path  # the project the deployment ran in (a fresh git + DVC copy of this checkout)
    reads: Path  # which params each stage read (MMRPT_RECORD_READS)
    output: str  # `prefect deployment run --watch`
    stored: str  # `prefect deployment inspect`
    server_stopped: bool
    worker_stopped: bool


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


def run_deployment(tmp: Path) -> Deployed:
    work = copy_repo(tmp / "work")
    reads = tmp / "reads.jsonl"
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MMRPT_HOME": str(ROOT),
        "MMRPT_RECORD_READS": str(reads),  # the worker's flow runs pass it to every stage
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp / "server.log",
    )
    worker = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp / "server.log").read_text()
                assert time.time() < deadline, "prefect server did not become healthy"
                time.sleep(1)
        prefect(["work-pool", "create", "mmrpt-cpu", "--type", "process"], env)
        prefect(["--no-prompt", "deploy", "--name", "embedded"], env)
        stored = prefect(["deployment", "inspect", "mmrpt-pipeline/embedded"], env)
        worker = start(
            [str(BIN / "prefect"), "worker", "start", "--pool", "mmrpt-cpu"],
            env,
            tmp / "worker.log",
        )
        output = prefect(
            [
                "deployment",
                "run",
                "mmrpt-pipeline/embedded",
                "--params",
                json.dumps({"workdir": str(work), **PARAMS}),
                "--watch",
                "--watch-timeout",
                str(TIMEOUT),
            ],
            env,
            timeout=TIMEOUT + 60,
        )
        assert "Completed" in output, output + (tmp / "worker.log").read_text()
    finally:
        if worker is not None:
            stop(worker)  # the worker before the server
        stop(server)
    return Deployed(
        work=work,
        reads=reads,
        output=output,
        stored=stored,
        server_stopped=server.poll() is not None,
        worker_stopped=worker.poll() is not None,
    )
