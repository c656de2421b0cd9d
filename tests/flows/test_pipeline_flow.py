import json
from pathlib import Path

import mlflow
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline
from mmrpt.cli import main
from mmrpt.config import ARMS, STAGES, ParamsError
from tests.tiny_params import TINY


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


def nested_stage_runs(tracking_uri: str) -> tuple[list, list]:
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    children = [r for r in runs if parents and
                r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents, children


@pytest.mark.slow
def test_flow_runs_the_stages(harness, tmp_path: Path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    results = pipeline(overrides={"warmup.max_steps": 10}, seed=1)
    assert tuple(results) == STAGES
    with get_client(sync_client=True) as client:
        names = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs()}
    assert set(STAGES) <= names  # Prefect task names = stage names
    assert json.loads((tmp_path / "metrics/warmup.json").read_text())["steps"] == 10
    parents, children = nested_stage_runs("sqlite:///mlruns/mlflow.db")
    assert len(parents) == 1
    names = [r.info.run_name for r in children]
    assert set(names) == set(STAGES)
    for stage in ("rl", "sft", "eval"):  # once per arm (one replicate seed here)
        assert names.count(stage) == len(ARMS)
        assert set(results[stage]) == {f"{arm}-0" for arm in ARMS}
    for r in children:
        assert r.data.tags["git_commit"] and r.data.tags["params_hash"]
        assert r.data.params["seed"] == "1"
    with pytest.raises(ParamsError, match="warmup.max_step"):
        pipeline(overrides={"warmup.max_step": 10})


@pytest.mark.parametrize(("error", "calls"), [(ParamsError("score.layers [9] out of range"), 1),
                                              (RuntimeError("worker lost"), 3)])
def test_flow_retries_only_what_may_pass(harness, tmp_path: Path, monkeypatch, error, calls):
    import flows.pipeline as fp
    import mmrpt.stages.data

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fp, "run_stage", fp.run_stage.with_options(retry_delay_seconds=0))
    seen = []

    def failing(params):
        seen.append(1)
        raise error

    monkeypatch.setattr(mmrpt.stages.data, "run", failing)
    with pytest.raises(type(error), match=str(error).split()[0]):
        pipeline(stages=["data"])
    assert len(seen) == calls  # bad params: once; anything else: 1 + 2 retries


@pytest.mark.slow
def test_compare_prints_runs_and_plots(harness, tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    assert main(["compare"]) == 1  # no runs yet: says so
    for seed in (0, 1):
        pipeline(stages=["data", "warmup"], overrides={"warmup.max_steps": 5}, seed=seed)
    capsys.readouterr()
    assert main(["compare", "--stage", "warmup", "--out", "cmp.png"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " warmup " in line]
    assert len(lines) == 2 and {line.split()[5] for line in lines} == {"0", "1"}
    assert (tmp_path / "cmp.png").stat().st_size > 1000
