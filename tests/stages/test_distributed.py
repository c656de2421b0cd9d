"""The training stages at world size 2 on CPU (torchrun, gloo) through DeepSpeed ZeRO-3, the
way dvc.yaml runs them (`python -m mmrpt <stage>`, which re-runs itself under the launcher):
each exits 0 with its metrics, is one MLflow run, trains on the same number of samples per
step as at world size 1 (the batch params are global), and is evaluated on the saved model.
ZeRO-2 runs in one process in tests/reliability/test_artifacts.py (rl, resumed): the project
has no ZeRO-2-only code, and at world size 2 ZeRO-3 takes every path ZeRO-2 does (the launch,
the split batch, rank 0's logging) and partitions the weights too (generation, gathering on
save), so a second world-size-2 run under ZeRO-2 (~60 s) was dropped from the suite.
DeepSpeed's CPU ops compile on first use (~30-65 s each, then cached in
~/.cache/torch_extensions): the first of these tests takes that much longer on a cold CI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from mmrpt.cli import main
from mmrpt.pipeline import context

ROOT = Path(__file__).resolve().parents[2]
RUN = ["--arm", "mmrpt", "--seed", "0"]


def mmrpt(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    out = subprocess.run(
        [sys.executable, "-m", "mmrpt", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


def runs(project: Path, stage: str) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    found = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in found if r.data.tags.get("stage") == stage]


@pytest.mark.slow
def test_rl_and_sft_at_world_size_two(primed_template: Path, tmp_path: Path):
    p = shutil.copytree(primed_template, tmp_path / "project")
    launch = [
        "-S",
        "launch.num_processes=2",
        "-S",
        f"launch.deepspeed={ROOT}/mmrpt/deepspeed/zero3.json",
    ]
    out = mmrpt(["rl", *RUN, *launch], p)
    assert "--nproc_per_node 2" in out and "DeepSpeed" in out
    rl = json.loads((p / "metrics/rl/mmrpt-0.json").read_text())
    # world size 1 trains on rl.batch_size = 4 prompts per step too (test_primer_rl.py)
    assert rl["steps"] == 4 and rl["samples_per_step"] == 4
    before = load_file(p / "models/primer/model.safetensors")
    after = load_file(p / "models/rl/mmrpt-0/model.safetensors")
    # whole tensors (ZeRO-3's gathered on save; DeepSpeed also writes the tied lm_head)
    assert before.keys() <= after.keys()
    assert all(after[k].shape == before[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)

    mmrpt(["sft", *RUN, *launch, "-S", "sft.budgets=[2]"], p)
    sft = json.loads((p / "metrics/sft/mmrpt-0.json").read_text())
    assert sft["steps"] == 4 and sft["samples_per_step"] == 4 and sft["final_loss"] > 0
    # the budget snapshot is a whole model too (gathered under ZeRO-3), not the final one
    final = load_file(p / "models/sft/mmrpt-0/model.safetensors")
    budget = load_file(p / "models/sft-budgets/mmrpt-0/2/model.safetensors")
    assert all(budget[k].shape == before[k].shape for k in before)
    assert any(not torch.equal(budget[k], final[k]) for k in before)
    for stage, name in (("rl", "rl/mmrpt-0"), ("sft", "sft/mmrpt-0")):
        (run,) = runs(p, stage)  # one run per stage: rank 1 logged nothing
        assert run.info.run_name == name and run.info.status == "FINISHED"
    assert runs(p, "rl")[0].data.metrics["exact_match"] == rl["exact_match"]


@pytest.mark.slow
def test_rl_through_deepspeed_zero3_in_one_process(primed_template: Path, tmp_path: Path):
    """ZeRO-3 in one CPU process, as `python -m mmrpt rl` runs it with launch.deepspeed set
    (it sets DeepSpeed's RANK/WORLD_SIZE/MASTER_* itself); the evaluation after training
    loads the saved model whole, not partitioned, and generates."""
    p = shutil.copytree(primed_template, tmp_path / "project")
    mmrpt(["rl", *RUN, "-S", f"launch.deepspeed={ROOT}/mmrpt/deepspeed/zero3.json"], p)
    before = load_file(p / "models/primer/model.safetensors")
    after = load_file(p / "models/rl/mmrpt-0/model.safetensors")
    assert all(after[k].shape == before[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    metrics = json.loads((p / "metrics/rl/mmrpt-0.json").read_text())
    assert metrics["samples_per_step"] == 4 and "exact_match_test_counter" in metrics


def test_deepspeed_checkpoints_refuse_another_world_size(tiny_project: Path, capsys):
    """ZeRO checkpoints are partitioned per process: resuming them at another world size is
    refused before any process starts, with what to do. Plain ones resume at any size."""
    from mmrpt.config import load_params
    from mmrpt.distributed import record_launch, resume_conflict

    cfg = f"launch.deepspeed={ROOT}/mmrpt/deepspeed/zero2.json"
    ctx = context("rl", load_params("params.yaml", [cfg]), "mmrpt", 0)
    ckpt = ctx.out("checkpoints")
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "fingerprint.txt").write_text(ctx.fingerprint())
    record_launch(ckpt, 1, cfg)
    assert main(["rl", *RUN, "-S", cfg, "-S", "launch.num_processes=2"]) == 2
    err = capsys.readouterr().err
    assert "DeepSpeed checkpoints written by 1 process(es)" in err
    assert "-S launch.num_processes=1" in err
    assert resume_conflict(ckpt, 2, None) is None  # plain checkpoints: no conflict
    assert resume_conflict(ckpt, 1, cfg) is None
