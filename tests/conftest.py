import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.tiny_params import TINY

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="mmrpt-prefect-"))


@pytest.fixture(scope="session", autouse=True)
def stop_prefect_temporary_servers():
    """A flow called without a server (PREFECT_API_URL unset) starts Prefect's temporary
    server, which Prefect stops at interpreter exit (atexit): by then pytest has closed the
    stream Prefect's log handler writes to, and its "Stopping temporary server" line ends the
    run as a "--- Logging error ---" traceback (and unsent logs as "Error logging to API").
    Here the logs are flushed and such servers stopped at the end of the session instead."""
    yield
    server = sys.modules.get("prefect.server.api.server")
    if server is None or not server.SubprocessASGIServer._instances:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all()
    EventsWorker.drain_all()
    for running in list(server.SubprocessASGIServer._instances.values()):
        running.stop()


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch) -> Path:
    """A working directory with a tiny params.yaml; stages write their outputs under it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def primed_template(tmp_path_factory) -> Path:
    """A tiny project run through data, warmup, score, mask and primer, once per session
    (~30 s); tests work on copies of it (primed_project)."""
    import contextlib

    from mmrpt.cli import main

    root = tmp_path_factory.mktemp("primed")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    with contextlib.chdir(root):
        for args in (
            ["data"],
            ["warmup", "-S", "warmup.max_steps=10"],
            ["score_heads"],
            ["score", "--worker", "0"],
            ["score_merge"],
            ["mask"],
            ["primer"],
        ):
            assert main(args) == 0, args
    return root


@pytest.fixture
def primed_project(primed_template: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the primed tiny project as the working directory. (Its MLflow experiment
    keeps the template's artifact folder: MLflow stores that location absolute.)"""
    import shutil

    project = shutil.copytree(primed_template, tmp_path / "project")
    monkeypatch.chdir(project)
    return project


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def deployed(tmp_path_factory):
    """The tiny pipeline run once per session through the Prefect deployment, as users run
    it (tests/deployed.py); read by tests/flows/test_deployment.py and tests/test_dvc.py."""
    from tests.deployed import run_deployment

    return run_deployment(tmp_path_factory.mktemp("deployed"))


def tiny_params_text() -> str:
    """The shipped params.yaml with the tiny test sizes merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        if isinstance(values, dict):
            merged = {**params.get(section, {}), **values}
            for key, sub in values.items():  # one level deeper (model.tiny)
                if isinstance(sub, dict) and isinstance(params.get(section, {}).get(key), dict):
                    merged[key] = {**params[section][key], **sub}
            params[section] = merged
        else:
            params[section] = values
    return yaml.safe_dump(params, sort_keys=False)


def copy_repo(dst: Path, git_env: dict | None = None) -> Path:
    """A copy of this checkout's tracked and unignored files (not the pipeline's recorded
    outputs: metrics/, plots/, dvc.lock), with tiny params, as a fresh git + DVC project."""
    import shutil
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(
            ("metrics/", "plots/", "dvc.lock", "eval/", "docs/")
        ):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    (dst / "params.yaml").write_text(tiny_params_text())
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **(git_env or {}),
    }
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(args, cwd=dst, env=env, check=True, capture_output=True)
    return dst
