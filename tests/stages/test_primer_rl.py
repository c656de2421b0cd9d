import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file

from mmrpt.cli import main
from mmrpt.config import DEFAULT_ARMS
from mmrpt.tracking import resume_file
from tests.killing import killed_after_save

ROOT = Path(__file__).resolve().parents[2]


def test_primer_then_every_arm(primed_project: Path):
    p = primed_project
    primer = json.loads((p / "metrics/primer.json").read_text())
    for key in ("warmup_exact_match", "warmup_fillin_exact_match", "primer_exact_match"):
        assert 0.0 <= primer[key] <= 1.0
    before = load_file(p / "models/primer/model.safetensors")
    for arm in DEFAULT_ARMS:
        assert main(["rl", "--arm", arm, "--seed", "0"]) == 0
        after = load_file(p / f"models/rl/{arm}-0/model.safetensors")
        changed = sum(not torch.equal(before[k], after[k]) for k in before)
        assert changed > 0, f"{arm}: no parameter changed"
    for arm in DEFAULT_ARMS:
        run = json.loads((p / f"metrics/rl/{arm}-0.json").read_text())
        assert run["steps"] == 4 and 0.0 <= run["exact_match"] <= 1.0
        assert run["samples_per_step"] == 4  # rl.batch_size (GRPO: 8 rollouts of 4 prompts)
    # compute per arm: every arm trains on tokens; only GRPO samples (and forwards more)
    for arm, spec in DEFAULT_ARMS.items():
        run = json.loads((p / f"metrics/rl/{arm}-0.json").read_text())
        assert run["tokens/backward"] > 0, arm
        if spec.objective == "grpo":
            assert run["tokens/generated"] > 0
            assert run["tokens/forward"] > run["tokens/backward"] + run["tokens/generated"]
        else:
            assert run["tokens/generated"] == 0 and run["tokens/forward"] == run["tokens/backward"]
    # rewards were logged per term for the GRPO arms
    mlflow.set_tracking_uri(f"sqlite:///{p / 'mlruns/mlflow.db'}")
    runs = [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.data.tags.get("arm") == "mmrpt"
    ]
    assert len(runs) == 1
    keys = set(runs[0].data.metrics)
    for term in ("format", "exact", "prefix", "semantic", "visual"):
        assert f"train/rewards/{term}/mean" in keys, sorted(keys)
    assert {"train/reward", "train/entropy", "train/completions/mean_length"} <= keys
    # the clock goes to MLflow, not into the versioned curve (same code and seed, same file)
    assert "train/timing/step_s" in keys
    columns = (p / "plots/rl/mmrpt-0.csv").read_text().splitlines()[0].split(",")
    assert "reward" in columns and not [
        c for c in columns if "time" in c or "per_second" in c or c == "tokens/s"
    ]


def test_rft_trains_on_accepted_samples_only(primed_project: Path):
    """The rft objective: one sampling pass by the primer, the completions with full format
    credit become the supervised data; the sampling pass counts as generated tokens."""
    p = primed_project
    arm = '{"objective": "rft", "reward_weights": {"format": 1.0}}'
    args = ["rl", "--arm", "rft", "--seed", "0", "-S", f"arms.rft={arm}"]
    assert main([*args, "-S", "rl.num_generations=4"]) == 0
    run = json.loads((p / "metrics/rl/rft-0.json").read_text())
    assert run["objective"] == "rft" and run["steps"] == 4
    accepted = json.loads((p / "checkpoints/rl/rft-0/rft_accepted.json").read_text())
    assert run["rft/accepted"] == len(accepted["accepted"]) > 0
    assert run["rft/sampled"] == 4 * run["rft/prompts"]
    from mmrpt.masking.samples import read_samples, samples_path
    from mmrpt.rl.rft import accepted as passes

    by_id = {s.id: s for s in read_samples(samples_path(p / "data/masked", "attention", "train"))}
    rows = accepted["accepted"]
    chosen = [by_id[r["id"]] for r in rows]
    assert all(passes([r["completion"] for r in rows], chosen, {"format": 1.0}))
    assert run["tokens/generated"] > 0
    assert run["tokens/forward"] > run["tokens/backward"] > 0


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _mmrpt(args, cwd, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "mmrpt", *args],
        cwd=cwd,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_rl_kill_and_resume(primed_project: Path):
    p = primed_project
    steps = ["--arm", "mmrpt", "--seed", "0", "-S", "rl.steps=6", "-S", "rl.save_steps=2"]
    ref = _mmrpt(["rl", *steps, "-S", "rl.checkpoint_dir=ref_ck", "-S", "rl.out_dir=ref"], p)
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    killed_after_save(["rl", *steps], p, step=2)
    ckpt = p / "checkpoints/rl/mmrpt-0"
    assert (ckpt / "checkpoint-2" / "trainer_state.json").exists()
    run_id = resume_file(ckpt).read_text()
    resumed = _mmrpt(["rl", *steps], p)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming from" in out
    assert resume_file(ckpt).read_text() == run_id
    a = load_file(p / "ref/mmrpt-0/model.safetensors")
    b = load_file(p / "models/rl/mmrpt-0/model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, f"resumed run differs from uninterrupted by {diff}"
