"""DVC as its users run it: `dvc repro` (then up to date), `dvc exp run -S`, `dvc exp show`,
`dvc metrics show`, on a copy of this repository with tiny params."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmrpt.config import ARMS, STAGES
from tests.tiny_params import TINY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(args, cwd, env) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.mark.slow
def test_dvc_repro_exp_and_metrics(tmp_path: Path):
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("metrics/", "dvc.lock")):
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        if isinstance(values, dict):
            params[section] = {**params[section], **values}
            if section == "model":
                params[section]["tiny"] = {**yaml.safe_load(
                    (ROOT / "params.yaml").read_text())["model"]["tiny"], **values["tiny"]}
        else:
            params[section] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "init"], repo, env)

    out = run(["dvc", "repro"], repo, env)
    for stage in STAGES:
        if stage in ("rl", "sft", "eval"):
            for arm in ARMS:
                assert f"Running stage '{stage}@{arm}-0'" in out
        else:
            assert f"Running stage '{stage}'" in out
    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again and "up to date" in again
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "repro"], repo, env)

    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env))
    flat = json.dumps(metrics)
    assert "auroc_counterfactual" in flat and "image_gain" in flat

    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo, env)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert "warmup caption loss" in page and "AUROC of D_vis per decoder layer" in page

    report = json.loads((repo / "metrics/report.json").read_text())
    assert set(ARMS) <= set(report["zero_shot"]["lmeval/iid/acc"])
    assert (repo / "reports/report.md").read_text().startswith("# MMRPT")

    out = run(["dvc", "exp", "run", "-S", "eval.blank=false", "-n", "noblank"], repo, env)
    assert "Running stage 'eval@mmrpt-0'" in out and "Running stage 'rl@" not in out
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    flat = json.dumps(show)
    assert '"noblank"' in flat and '"blank": false' in flat
