"""Class 6 of issue 18: two runs on one output never clobber each other.

Each stage run holds one lock per output it writes (mmrpt.stagerun, filelock): a second run
that would write any of them refuses at once with the holder named (exit 75, "try again
later"; the Prefect flow retries it), whether it comes from the CLI, ``dvc repro`` or a Prefect
task (they all run ``python -m mmrpt <stage>``). Runs with disjoint outputs (the rl@<arm>-<seed>
items DVC and the flow run concurrently) do not wait for each other. Before: two warmups on one
workspace either crashed or both exited 0 with the model and checkpoints of whichever finished
last, logging into one MLflow run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mmrpt.cli import main
from mmrpt.config import load_params
from mmrpt.pipeline import context
from mmrpt.stagerun import BUSY_EXIT, output_locks
from tests.reliability.conftest import error_lines

ROOT = Path(__file__).resolve().parents[2]

HOLD = """
import sys, time
from mmrpt.config import load_params
from mmrpt.pipeline import context
from mmrpt.stagerun import output_locks
name, *run = sys.argv[1:]
ctx = context(name, load_params("params.yaml"), *([run[0], int(run[1])] if run else []))
with output_locks(ctx):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(project: Path, *stage: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, *stage],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_busy_output_refuses_and_names_the_holder(warmed_project: Path, capsys):
    p = warmed_project
    before = (p / "models/warmup/model.safetensors").read_bytes()
    holder = _hold(p, "warmup")
    try:
        assert main(["warmup", "-S", "warmup.max_steps=12"]) == BUSY_EXIT
        (line,) = error_lines(capsys.readouterr().err)
        assert f"is being written by mmrpt warmup (pid {holder.pid} on" in line
        assert (p / "models/warmup/model.safetensors").read_bytes() == before  # untouched
        # another stage with other outputs is not held up
        assert main(["score_heads"]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert main(["warmup", "-S", "warmup.max_steps=12"]) == 0  # a lock dies with its holder


def test_matrix_items_with_disjoint_outputs_run_concurrently(warmed_project: Path):
    params = load_params("params.yaml")
    holder = _hold(warmed_project, "rl", "mmrpt", "0")
    try:
        with output_locks(context("rl", params, "ntp", 0)):  # another arm: not held up
            pass
        other = context("rl", params, "mmrpt", 1)
        with output_locks(other):  # another seed of the same arm: neither
            pass
    finally:
        holder.kill()
        holder.wait()


def test_two_warmups_started_together_one_runs_one_refuses(warmed_project: Path):
    p = warmed_project
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "mmrpt", "warmup", "-S", "warmup.max_steps=12"]
    procs = [
        subprocess.Popen(args, cwd=p, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    t0 = time.time()
    results = sorted((proc.wait(timeout=300), proc.stderr.read()) for proc in procs)
    assert [code for code, _ in results] == [0, BUSY_EXIT], results[1][1][-2000:]
    assert "is being written by mmrpt warmup" in results[1][1]
    assert json.loads((p / "metrics/warmup.json").read_text())["steps"] == 12
    assert time.time() - t0 < 300
