"""Fixtures of the fault-injection suite.

`scored_template` is one tiny project run through data, warmup (10 steps) and score (one
worker, merged), built
once per session (~15 s): it is the uninterrupted reference run of the resume and determinism
tests. `warmed_project` is a private copy of it (outputs of data and warmup only, no MLflow
store) for tests that inject faults.
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.tiny_params import TINY

PARAMS = copy.deepcopy(TINY)
PARAMS["warmup"]["max_steps"] = 10  # in params.yaml, so every later stage sees the same value
STAGES = (["data"], ["warmup"], ["score_heads"], ["score", "--worker", "0"], ["score_merge"])


def run_stages(root: Path, stages=STAGES) -> Path:
    from mmrpt.cli import main

    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    with contextlib.chdir(root):
        for args in stages:
            assert main(args) == 0, args
    return root


@pytest.fixture(scope="session")
def scored_template(tmp_path_factory) -> Path:
    return run_stages(tmp_path_factory.mktemp("scored"))


@pytest.fixture
def warmed_project(scored_template: Path, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the template after data and warmup: no scores, no MLflow store."""
    dest = tmp_path / "project"
    shutil.copytree(scored_template, dest, ignore=shutil.ignore_patterns("mlruns"))
    shutil.rmtree(dest / "data/scores")
    (dest / "metrics/score.json").unlink()
    monkeypatch.chdir(dest)
    return dest


def error_lines(stderr: str) -> list[str]:
    """The CLI's own error lines in a captured stderr (progress bars and logs left out)."""
    return re.findall(r"mmrpt: [^\r\n]*", stderr)  # a progress bar may precede it
