"""The GRPO trainer logs its per-step time split and throughput, and every N steps a table of
sample completions with their images, to MLflow."""

import json
from pathlib import Path

import mlflow
import pytest

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.pipeline import context
from mmrpt.rl.grpo import grpo_dataset, make_grpo_trainer
from mmrpt.stages.step_logger import StepLogger


def test_grpo_logs_timing_split_and_completion_table(tiny_rl, tmp_path: Path):
    model, processor, samples, root = tiny_rl
    with tracking.stage_run(context("rl", Params(), "mmrpt", 0)) as run_id:
        trainer = make_grpo_trainer(
            model,
            processor,
            grpo_dataset(samples, root),
            out_dir=tmp_path / "ck",
            steps=5,
            batch_size=2,
            num_generations=2,
            temperature=1.0,
            lr=1e-3,
            beta=0.0,
            loss_type="dapo",
            max_completion_length=12,
            reward_weights={"format": 0.2, "exact": 1.0, "visual": 0.2},
            save_steps=100,
            seed=0,
            callbacks=[StepLogger()],
            log_completions_steps=2,
        )
        trainer.train()

    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    for key in ("generation_s", "update_s", "reward_s", "step_s"):
        assert metrics[f"train/timing/{key}"] > 0, key
    assert metrics["train/tokens/s"] > 0
    # generation + update = step (each averaged over the same logging window)
    split = metrics["train/timing/generation_s"] + metrics["train/timing/update_s"]
    assert split == pytest.approx(metrics["train/timing/step_s"], rel=1e-6)
    assert metrics["train/timing/reward_s"] < metrics["train/timing/generation_s"]
    # ... but not into the state the checkpoints save (trainer_state.json: dvc.lock hashes
    # the checkpoint folders, the same bytes on every run of the same code and seed)
    keys = {k for h in trainer.state.log_history for k in h}
    assert "reward" in keys and not [k for k in keys if "time" in k or k.endswith("/s")], keys

    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "art")))
    table = json.loads((local / tracking.COMPLETIONS_TABLE).read_text())  # orient="split"
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert sorted({r["step"] for r in rows}) == [2, 4]
    assert len(rows) == 2 * 2 * 2  # two logged steps x 2 prompts x 2 rollouts
    for r in rows:
        assert "Caption:" in r["prompt"] and isinstance(r["completion"], str)
        assert {"reward/format", "reward/exact", "reward/visual", "advantage"} <= set(r)
        assert r["image"]["type"] == "image" and (local / r["image"]["filepath"]).is_file()
