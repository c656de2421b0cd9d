import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch
from prefect.logging.handlers import APILogWorker
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import (
    Slots,
    StageFailed,
    concurrent,
    critical_path,
    expected_seconds,
    may_pass_on_retry,
    pipeline,
    select,
    settle_lock,
    stage_threads,
)
from mmrpt.cli import main
from mmrpt.config import ParamsError
from tests.conftest import copy_repo


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


def dvc(args, cwd) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def nested_stage_runs(tracking_uri: str) -> tuple[list, list]:
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = sorted(
        (r for r in runs if r.data.tags.get("kind") == "pipeline"), key=lambda r: r.info.start_time
    )  # the first pipeline run first
    children = [
        r
        for r in runs
        if parents and r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    ]
    return parents, children


@pytest.mark.slow
def test_flow_runs_the_dvc_stages(harness, tmp_path: Path):
    """A chain of the graph (the deployment run of tests/deployed.py runs every stage, its
    score workers side by side) from a params file, with the flow's shortcut params."""
    repo = copy_repo(tmp_path / "repo")
    profile = yaml.safe_load((repo / "params.yaml").read_text())
    profile["eval"]["limit"] = 10
    (repo / "profile.yaml").write_text(yaml.safe_dump(profile))
    target = "warmup"
    results = pipeline(
        stages=[target],
        workdir=str(repo),
        params_file="profile.yaml",
        overrides={"warmup.max_steps": 10},
        seed=1,
        score_workers=2,
        max_parallel=2,
    )
    chain = ["data", target]
    assert list(results) == chain
    # the workspace is as `dvc repro warmup` leaves it: dvc.lock records what ran
    assert "up to date" in dvc(["status", "--with-deps", target], repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(chain)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["seed"] == 1 and params["warmup"]["max_steps"] == 10
    assert params["eval"]["limit"] == 10 and params["score"]["workers"] == [0, 1]
    assert json.loads((repo / "metrics/warmup.json").read_text())["steps"] == 10
    APILogWorker.drain_all()  # the task runs' logs reach the server
    with get_client(sync_client=True) as client:
        names = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs()}
        text = LogFilter(text=LogFilterTextSearch(query="warmup | "))
        logs = [log.message for log in client.read_logs(text, limit=200)]
    assert set(chain) <= names
    # each stage's own output reaches the task run's logs as it runs (its progress lines)
    assert any("stage warmup (" in m for m in logs), logs[:20]
    # the stage took its slot from this flow run's Slots, which know its critical path
    assert any(m.startswith("warmup: started; ~") for m in logs), logs[:20]
    parents, children = nested_stage_runs(f"sqlite:///{repo}/mlruns/mlflow.db")
    assert len(parents) == 1
    names = sorted(r.info.run_name for r in children)
    assert names == sorted(chain)
    for r in children:
        assert r.data.tags["git_commit"] and r.data.tags["params_hash"]
    # a second run finds everything up to date and runs nothing
    again = pipeline(stages=[target], workdir=str(repo))
    assert again == results
    parents, children = nested_stage_runs(f"sqlite:///{repo}/mlruns/mlflow.db")
    assert len(parents) == 2 and len(children) == len(names)
    with pytest.raises(ParamsError, match="warmup.max_step"):
        pipeline(workdir=str(repo), overrides={"warmup.max_step": 10})


def test_stage_selection_follows_the_dvc_graph():
    order = ["data", "warmup", "rl@a-0", "rl@b-0", "report"]
    upstream = {
        "data": [],
        "warmup": ["data"],
        "rl@a-0": ["warmup"],
        "rl@b-0": ["warmup"],
        "report": ["rl@a-0", "rl@b-0"],
    }
    assert select(order, upstream, None) == order
    assert select(order, upstream, ["warmup"]) == ["data", "warmup"]
    assert select(order, upstream, ["rl"]) == ["data", "warmup", "rl@a-0", "rl@b-0"]
    assert select(order, upstream, ["rl@b-0"]) == ["data", "warmup", "rl@b-0"]
    with pytest.raises(ValueError, match="unknown stages"):
        select(order, upstream, ["rlx"])


def test_only_stages_that_may_run_together_share_the_cores(monkeypatch):
    order = ["data", "score@0", "score@1", "merge", "rl@a-0", "rl@b-0", "sft@a-0", "report"]
    upstream = {
        "data": [],
        "score@0": ["data"],
        "score@1": ["data"],
        "merge": ["score@0", "score@1"],
        "rl@a-0": ["merge"],
        "rl@b-0": ["merge"],
        "sft@a-0": ["rl@a-0"],
        "report": ["sft@a-0", "rl@b-0"],
    }
    shared = {"score@0", "score@1", "rl@a-0", "rl@b-0", "sft@a-0"}
    assert concurrent(order, upstream) == shared
    assert concurrent(["data", "rl@a-0", "sft@a-0"], upstream) == set()  # one chain: alone
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert stage_threads(2, True) == 4 and stage_threads(16, True) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)  # the machine's: not what this process gets
    assert stage_threads(2, True) == 4
    assert stage_threads(2, False) is None and stage_threads(1, True) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    assert stage_threads(2, True) is None


def test_a_free_slot_goes_to_the_longest_remaining_chain():
    from mmrpt.config import load_params

    params = load_params(Path("params.yaml"))
    arms = ["masked_sft", "mmrpt", "ntp", "random_mask"]
    order = ["primer"] + [f"{s}@{a}-0" for s in ("rl", "sft", "eval") for a in arms] + ["report"]
    upstream = {"primer": [], "report": [f"eval@{a}-0" for a in arms]}
    for a in arms:
        upstream |= {f"rl@{a}-0": ["primer"], f"sft@{a}-0": [f"rl@{a}-0"]}
        upstream[f"eval@{a}-0"] = [f"sft@{a}-0"]
    cost = {s: expected_seconds(s, params) for s in order}
    assert cost["rl@mmrpt-0"] > 2 * cost["rl@ntp-0"] > 2  # GRPO rollouts: the measured times
    rest = critical_path(order, upstream, cost)
    assert rest["primer"] == cost["primer"] + rest["rl@mmrpt-0"]
    chain = ("rl", "sft", "eval")
    assert rest["rl@mmrpt-0"] == sum(cost[f"{s}@mmrpt-0"] for s in chain) + cost["report"]
    first = sorted((f"rl@{a}-0" for a in arms), key=rest.get, reverse=True)[:2]
    assert set(first) == {"rl@mmrpt-0", "rl@random_mask-0"}  # the two GRPO arms start first


def test_a_slot_waits_for_the_longer_chain_whose_thread_comes_later():
    arms = {"ntp": 149.0, "masked_sft": 151.0, "mmrpt": 327.0, "random_mask": 323.0}
    upstream = {"primer": []} | {f"rl@{a}": ["primer"] for a in arms}
    slots = Slots(2, upstream, {"primer": 900.0} | {f"rl@{a}": v for a, v in arms.items()})
    got, go = [], {a: threading.Event() for a in arms}

    def stage(arm):
        with slots.take(f"rl@{arm}"):
            got.append(arm)
            go[arm].wait(timeout=30)

    def arrive(arm):
        threading.Thread(target=stage, args=(arm,), daemon=True).start()
        while f"rl@{arm}" not in slots.waiting | slots.holding:
            time.sleep(0.01)

    with slots.take("primer"):
        pass  # done: the four rl stages are ready at once
    arrive("ntp")  # the short chains' threads come first, with both slots free
    arrive("masked_sft")
    time.sleep(0.3)
    assert got == []  # they wait: two ready stages outrank them
    arrive("mmrpt")
    arrive("random_mask")
    until(lambda: len(got) == 2)
    assert slots.started[1:] == ["rl@mmrpt", "rl@random_mask"]
    go["mmrpt"].set()
    until(lambda: len(got) == 3)
    assert slots.started[3] == "rl@masked_sft"  # the longer of the two that waited
    for e in go.values():
        e.set()
    until(lambda: len(got) == 4 and slots.free == 2)


def test_a_ready_stage_that_never_comes_stops_holding_others_back():
    slots = Slots(1, {"a": [], "b": []}, {"a": 2.0, "b": 1.0}, patience=0.2)
    t0 = time.monotonic()
    with slots.take("b"):  # "a" outranks it but never asks
        waited = time.monotonic() - t0
    assert 0.2 <= waited < 1.0


def test_a_stage_that_came_and_failed_does_not_hold_others_back():
    slots = Slots(1, {"a": [], "b": []}, {"a": 2.0, "b": 1.0}, patience=60.0)
    with pytest.raises(RuntimeError), slots.take("a"):
        raise RuntimeError("stage a failed; its retry comes in 10 s")
    t0 = time.monotonic()
    with slots.take("b"):  # "a" is ready and not finished, but it came: no waiting for it
        assert time.monotonic() - t0 < 0.5
    assert "a" not in slots.finished and slots.started == ["a", "b"]


def until(condition, timeout=10.0):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


LOCK = """schema: '2.0'
stages:
  data:
    cmd: python -m mmrpt data
    outs:
    - path: data/world
      hash: md5
      md5: 0f0e0d0c0b0a09080706050403020100.dir
      size: 12
      nfiles: 3
  rl@a-0:
    cmd: python -m mmrpt rl --arm a --seed 0
    params:
      params.yaml:
        seed: 0
  rl@b-0:
    cmd: python -m mmrpt rl --arm b --seed 0
"""


def test_the_lock_lists_stages_in_the_graphs_order_whichever_finished_first(tmp_path):
    from dvc.utils.serialize import modify_yaml

    lock = tmp_path / "dvc.lock"
    lock.write_text(LOCK)
    with modify_yaml(lock) as data:  # rl@b-0 finished first: DVC appended it first
        stages = data["stages"]
        entry = stages.pop("rl@a-0")
        stages["rl@a-0"] = entry
    assert lock.read_text() != LOCK
    settle_lock(tmp_path, ["data", "rl@a-0", "rl@b-0", "report"])
    assert lock.read_text() == LOCK  # DVC's writer: only the order changed


class State:
    def __init__(self, error):
        self.error = error

    def result(self):
        raise self.error


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (StageFailed("score", 2, "score.layers [9] out of range"), False),  # bad params or input
        (StageFailed("rl@mmrpt-0", 1, "worker lost"), True),
        (StageFailed("rl@mmrpt-0", -9, "killed"), True),
        (FileNotFoundError("no params.yaml"), False),
        (OSError("disk"), True),
    ],
)
def test_only_what_may_pass_is_retried(error, retry):
    assert may_pass_on_retry(None, None, State(error)) is retry


@pytest.mark.slow
def test_bad_input_fails_once_with_its_reason(harness, tmp_path: Path):
    repo = copy_repo(tmp_path / "repo")
    with pytest.raises(StageFailed, match="score.layers") as err:
        pipeline(
            stages=["score_heads"],
            workdir=str(repo),
            overrides={"warmup.max_steps": 5, "score.select": "band", "score.layers": [9]},
        )
    assert err.value.code == 2
    with get_client(sync_client=True) as client:
        score = [t for t in client.read_task_runs() if t.name.startswith("score")]
    assert score and all(t.run_count == 1 for t in score)


@pytest.mark.slow
def test_compare_prints_runs_and_plots(tmp_path: Path, monkeypatch, capsys):
    repo = copy_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    assert main(["compare"]) == 1  # no runs yet: says so
    assert main(["data"]) == 0
    for seed in (0, 1):  # the stages in this process (the flow runs them the same way)
        assert main(["warmup", "-S", "warmup.max_steps=5", "-S", f"seed={seed}"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "compare",
                "--stage",
                "warmup",
                "--params",
                "seed",
                "--out",
                "cmp.png",
                "--metrics",
                "eval/image_gain,train/loss",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " warmup " in line]
    assert len(lines) == 2 and {line.split()[5] for line in lines} == {"0", "1"}
    assert (repo / "cmp.png").stat().st_size > 1000
