import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow

from mmrpt.cli import main
from tests.conftest import ROOT


def test_unreachable_mlflow_server_falls_back_to_local_store(tiny_project: Path, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["data", "-S", f"tracking.tracking_uri=http://127.0.0.1:{port}"]) == 0
    assert "unreachable" in caplog.text
    assert json.loads((tiny_project / "metrics/data.json").read_text())["train/n_records"] == 64
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlruns/mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(r.info.run_name for r in runs if r.data.tags.get("kind") != "pipeline") == [
        "data"
    ]


def test_runs_whose_process_died_are_closed_by_the_next_stage(tiny_project: Path, caplog):
    """kill -9 leaves a run RUNNING; the next start on this host marks it KILLED, and leaves
    runs of live processes, of other hosts and the one about to be resumed alone."""
    from mmrpt import tracking
    from mmrpt.config import load_params

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        experiment = tracking.configure(load_params("params.yaml", []))
        client = mlflow.MlflowClient()
        here = tracking._host()
        ids = {
            name: client.create_run(
                experiment,
                run_name=name,
                tags={tracking.HOST_TAG: host, tracking.PID_TAG: str(pid)},
            ).info.run_id
            for name, host, pid in (
                ("dead", here, dead.pid),
                ("alive", here, alive.pid),
                ("elsewhere", "another-host", dead.pid),
                ("resumed", here, dead.pid),
            )
        }
        assert tracking.close_orphaned_runs(experiment, keep=ids["resumed"]) == [ids["dead"]]
        assert main(["data"]) == 0  # a stage start does the same
        status = {name: client.get_run(i).info.status for name, i in ids.items()}
        assert status == {
            "dead": "KILLED",
            "alive": "RUNNING",
            "elsewhere": "RUNNING",
            "resumed": "KILLED",
        }
        assert "process is gone" in caplog.text
        data = [r for r in client.search_runs([experiment]) if r.info.run_name == "data"]
        assert data[0].info.status == "FINISHED"
        assert data[0].data.tags[tracking.HOST_TAG] == here
    finally:
        alive.kill()


def test_a_resumed_stage_claims_its_run_and_a_lost_run_starts_anew(tiny_project: Path, caplog):
    from mmrpt import tracking
    from mmrpt.config import load_params
    from mmrpt.pipeline import context

    params = load_params("params.yaml", [])
    experiment = tracking.configure(params)
    client = mlflow.MlflowClient()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = client.create_run(
        experiment,
        run_name="warmup",
        tags={tracking.HOST_TAG: tracking._host(), tracking.PID_TAG: str(dead.pid)},
    ).info.run_id
    assert tracking.close_orphaned_runs(experiment) == [killed]
    id_file = tiny_project / ".mmrpt/mlflow/warmup.txt"
    id_file.parent.mkdir(parents=True)
    id_file.write_text(killed)
    with tracking.stage_run(context("warmup", params), run_id_file=id_file) as run_id:
        assert run_id == killed
        assert client.get_run(killed).info.status == "RUNNING"
    run = client.get_run(killed)
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracking.PID_TAG] == str(os.getpid())
    assert tracking.CLOSED_TAG not in run.data.tags

    id_file.write_text("0" * 32)  # the store was wiped, the checkpoints were not
    with tracking.stage_run(context("warmup", params), run_id_file=id_file) as run_id:
        assert run_id != "0" * 32
    assert "not found: starting a new run" in caplog.text
    assert id_file.read_text() == run_id


def test_only_rank_zero_talks_to_mlflow(tiny_project: Path, monkeypatch):
    """In a multi-process stage the other ranks open no run and log nothing, so a stage is
    one run at any world size (an active-run-less mlflow.log_metrics would start a run)."""
    from mmrpt import tracking
    from mmrpt.config import load_params
    from mmrpt.pipeline import context

    params = load_params("params.yaml", [])
    monkeypatch.setenv("RANK", "1")
    with tracking.stage_run(context("warmup", params)) as run_id:
        assert run_id is None
        tracking.log_metrics({"x": 1.0})
        tracking.log_dict({"a": 1}, "a.json")
    assert mlflow.active_run() is None
    assert not (tiny_project / "mlruns").exists()  # not even the store was touched
    monkeypatch.setenv("RANK", "0")
    with tracking.stage_run(context("warmup", params)) as run_id:
        tracking.log_metrics({"x": 1.0})
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    stages = [r for r in runs if "mlflow.parentRunId" in r.data.tags]  # under the pipeline run
    assert [r.info.run_id for r in stages] == [run_id]
    assert len(runs) == 2  # and the pipeline run itself


def test_reference_times_are_shown_only_for_the_params_they_were_measured_with(
    tmp_path: Path, monkeypatch
):
    """The stage line's "about N s in the reference main job" holds for the main job's params
    only: a study workspace (caption bias, other arms) or an override computes other work."""
    from mmrpt import cli
    from mmrpt.config import load_params
    from mmrpt.tracking import params_hash

    shipped = load_params(ROOT / "params.yaml")
    times = {"warmup": 250.0, "rl/grpo": 150.0, "rl/sft": 40.0, "eval": 30.0}
    ref = tmp_path / "reference_times.json"
    ref.write_text(json.dumps({"params_hash": params_hash(shipped), "stages_s": times}))
    monkeypatch.setattr(cli, "REFERENCE_TIMES", ref)
    assert cli.reference_seconds("warmup", shipped, None) == 250.0
    assert cli.reference_seconds("rl", shipped, "mmrpt") == 150.0  # per objective
    assert cli.reference_seconds("rl", shipped, "masked_sft") == 40.0
    for change in ("data.caption_bias=0.6", "rl.steps=10", "seeds=[0, 1]"):
        other = load_params(ROOT / "params.yaml", [change])
        assert cli.reference_seconds("warmup", other, None) is None, change
