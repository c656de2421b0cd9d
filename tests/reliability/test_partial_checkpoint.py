"""Class 5 of issue 18: a checkpoint cut short (kill -9 or a full disk during its save) is
never taken for a complete one; the rerun falls back to the last complete checkpoint.

A checkpoint is complete when its record exists: written to .mmrpt/trust after the Trainer's
save returned, with the hash of every file (mmrpt.checkpoints). Before: transformers'
get_last_checkpoint picked the highest-numbered folder, so a partial ``checkpoint-N`` (a 0-byte
optimizer.pt, no trainer_state.json) was the resume point of every rerun, and every rerun
crashed until a person deleted it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmrpt import checkpoints
from mmrpt.cli import main

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["-S", "warmup.max_steps=20"]  # checkpoints at 10 and 20

# warmup SIGKILLed by itself in the middle of saving checkpoint-20: after the weights and the
# optimizer state, before the RNG state, trainer_state.json and the record
KILL_IN_SAVE = """
import os, signal, sys
from transformers import Trainer
save_rng = Trainer._save_rng_state
def killed(self, output_dir):
    if output_dir.endswith("checkpoint-20"):
        os.kill(os.getpid(), signal.SIGKILL)
    return save_rng(self, output_dir)
Trainer._save_rng_state = killed
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture
def reference(warmed_project: Path) -> dict:
    """The uninterrupted 20-step run, in its own folders."""
    out = ["-S", "warmup.checkpoint_dir=ref_ck", "-S", "warmup.out_dir=ref_model"]
    assert main(["warmup", *STEPS, *out]) == 0
    metrics = json.loads((warmed_project / "metrics/warmup.json").read_text())
    return {"metrics": metrics, "weights": _weights(warmed_project / "ref_model")}


def _assert_matches(project: Path, reference: dict) -> None:
    metrics = json.loads((project / "metrics/warmup.json").read_text())
    assert metrics["steps"] == 20
    assert metrics["final_train_loss"] == pytest.approx(
        reference["metrics"]["final_train_loss"], rel=1e-5
    )
    got = _weights(project / "models/warmup")
    diff = max((got[k] - w).abs().max().item() for k, w in reference["weights"].items())
    assert diff < 1e-5


def test_killed_while_saving_resumes_from_the_last_complete_checkpoint(
    warmed_project: Path, reference: dict, caplog
):
    caplog.set_level(logging.INFO)
    p = warmed_project
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_SAVE, "warmup", *STEPS],
        cwd=p,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    partial = p / "checkpoints/warmup/checkpoint-20"
    assert (partial / "model.safetensors").exists() and (partial / "optimizer.pt").exists()
    assert not (partial / "trainer_state.json").exists()
    assert checkpoints.problem(partial).startswith("no record")
    assert checkpoints.problem(p / "checkpoints/warmup/checkpoint-10") is None

    assert main(["warmup", *STEPS]) == 0
    assert "checkpoint-20: not loaded (no record" in caplog.text
    assert "resuming from" in caplog.text and "checkpoint-10" in caplog.text
    _assert_matches(p, reference)
    assert checkpoints.problem(partial) is None  # saved again, complete


def test_full_disk_while_saving_then_a_rerun_that_completes(
    warmed_project: Path, reference: dict, monkeypatch
):
    from transformers import Trainer

    p = warmed_project
    save = Trainer._save_optimizer_and_scheduler

    def disk_full(self, output_dir):
        if output_dir.endswith("checkpoint-20"):
            Path(output_dir, "optimizer.pt").write_bytes(b"")
            raise OSError(28, "No space left on device (injected)")
        return save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_full)
    assert main(["warmup", *STEPS]) == 1  # an OS error: one line, may pass on a retry
    partial = p / "checkpoints/warmup/checkpoint-20"
    assert (partial / "optimizer.pt").stat().st_size == 0
    assert not (partial / "trainer_state.json").exists()

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save)
    assert main(["warmup", *STEPS]) == 0  # twice would crash twice before
    _assert_matches(p, reference)
