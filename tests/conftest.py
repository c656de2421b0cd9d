import os
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


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch) -> Path:
    """A working directory with a tiny params.yaml; stages write their outputs under it."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def primed_project(tiny_project: Path) -> Path:
    """A tiny project run through data, warmup, score, mask and primer."""
    from mmrpt.cli import main

    for args in (["data"], ["warmup", "-S", "warmup.max_steps=10"], ["score"], ["mask"],
                 ["primer"]):
        assert main(args) == 0, args
    return tiny_project
