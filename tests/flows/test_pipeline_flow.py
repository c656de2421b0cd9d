import json
from pathlib import Path

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline
from mmrpt.config import STAGES, ParamsError
from tests.tiny_params import TINY


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.mark.slow
def test_flow_runs_the_stages(harness, tmp_path: Path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    monkeypatch.chdir(tmp_path)
    results = pipeline(overrides={"warmup.max_steps": 10})
    assert tuple(results) == STAGES
    assert json.loads((tmp_path / "metrics/warmup.json").read_text())["steps"] == 10
    with pytest.raises(ParamsError, match="warmup.max_step"):
        pipeline(overrides={"warmup.max_step": 10})
