"""The update skips rollouts with advantage 0 only where that leaves the gradient unchanged."""

import pytest
import torch
from trl import GRPOTrainer

from mmrpt.rl.grpo import grpo_dataset, make_grpo_trainer, rows_with_signal


def rollout_batch(tiny_rl, tmp_path, loss_type="dapo", beta=0.0):
    model, processor, samples, root = tiny_rl
    trainer = make_grpo_trainer(
        model,
        processor,
        grpo_dataset(samples[:4], root),
        out_dir=tmp_path / "ck",
        steps=1,
        batch_size=2,
        num_generations=2,
        temperature=1.0,
        lr=1e-3,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=12,
        reward_weights={"format": 0.2, "exact": 1.0},
        save_steps=100,
        seed=0,
    )
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    model.train()
    return trainer, inputs


def gradient(trainer, inputs, loss_fn) -> torch.Tensor:
    trainer.model.zero_grad()
    loss_fn(trainer, trainer.model, dict(inputs)).backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    "advantages", [[0.7, -0.4, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]
)
def test_skipping_zero_advantage_rollouts_keeps_the_gradient(tiny_rl, tmp_path, advantages):
    trainer, inputs = rollout_batch(tiny_rl, tmp_path)
    inputs["advantages"] = torch.tensor(advantages)
    kept = rows_with_signal(dict(inputs))
    n = max(1, sum(a != 0 for a in advantages))
    assert kept["completion_ids"].shape[0] == n and len(kept["num_images"]) == n
    rows = int(inputs["image_grid_thw"][0].prod())
    assert kept["pixel_values"].shape[0] == n * rows
    assert kept["num_items_in_batch"] == inputs["num_items_in_batch"]

    full = gradient(trainer, inputs, GRPOTrainer._compute_loss)  # TRL's own, all rollouts
    ours = gradient(trainer, inputs, type(trainer)._compute_loss)
    assert full.abs().max() > 0 or not any(advantages)
    torch.testing.assert_close(ours, full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("setting", ["grpo loss", "entropy bonus", "two processes"])
def test_no_skipping_where_the_loss_depends_on_the_batch(tiny_rl, tmp_path, monkeypatch, setting):
    trainer, inputs = rollout_batch(
        tiny_rl, tmp_path, loss_type="grpo" if setting == "grpo loss" else "dapo"
    )
    assert trainer.skips_zero_advantage_rows() == (setting != "grpo loss")
    if setting == "entropy bonus":  # averaged over every token of the batch
        trainer._entropy_bonus_enabled = True
    if setting == "two processes":  # dapo gathers per-rollout clip statistics
        monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda _: 2))
    inputs["advantages"] = torch.tensor([0.7, 0.0, -0.7, 0.0])
    seen = []
    monkeypatch.setattr(
        GRPOTrainer,
        "_compute_loss",
        lambda self, model, batch: seen.append(batch["advantages"]) or 0,
    )
    trainer._compute_loss(trainer.model, inputs)
    assert len(seen[0]) == 4  # every rollout reaches TRL's loss
