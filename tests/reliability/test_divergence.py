"""Class 3 of issue 18: NaN and divergence no longer pass silently.

- every float param is finite and bounded on both sides (the schema);
- training stops at a non-finite loss with one clear line (exit 2) and saves nothing after it
  (mmrpt.guards.StopsOnNonFinite, added to every trainer by train_resumable);
- no stage accepts a model with non-finite weights as input (mmrpt.modeling.loader.load_vlm).

Before: a NaN warmup model went through score (all-NaN scores, then unrelated errors), and a
NaN primer through rl, sft and eval with exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file

from mmrpt.cli import main
from mmrpt.config import Params
from tests.reliability.conftest import error_lines


def _holds_float(ann) -> bool:
    return ann is float or any(_holds_float(a) for a in getattr(ann, "__args__", ()))


def _float_fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _float_fields(ann, f"{prefix}{name}.")
        elif _holds_float(ann):
            yield f"{prefix}{name}", field


def test_every_float_param_is_bounded_on_both_sides():
    from mmrpt.config import ArmParams

    fields = dict(_float_fields(Params)) | {
        f"arms.<arm>.{k}": v for k, v in _float_fields(ArmParams)
    }
    assert len(fields) >= 15  # the walk found them (lr, weight_decay, temperature, mask.k, ...)
    unbounded = []
    for key, field in fields.items():
        kinds = {type(m).__name__ for m in field.metadata}
        if not ({"Ge", "Gt"} & kinds and {"Le", "Lt"} & kinds):
            unbounded.append(key)
    # containers of floats, bounded by their section's validator (cases below)
    assert sorted(unbounded) == [
        "arms.<arm>.reward_weights",
        "rl.reward_weights",
        "score.layer_band",
    ]


@pytest.mark.parametrize(
    "override",
    [
        "warmup.weight_decay=1e9",
        "rl.temperature=1e6",
        "mask.k=1e9",
        "rl.beta=1e9",
        "rl.reward_weights={exact: 1e9}",
        "arms.mmrpt={objective: grpo, reward_weights: {exact: 1e9}}",
        "score.layer_band=[0.5, 1e9]",
    ],
)
def test_absurd_floats_are_refused(override):
    from mmrpt.config import ParamsError, load_params

    root = Path(__file__).resolve().parents[2]
    with pytest.raises(ParamsError, match=override.split("=")[0].replace("mmrpt", "")):
        load_params(root / "params.yaml", [override])


def test_training_stops_at_a_non_finite_loss(warmed_project: Path, capsys, monkeypatch):
    """The loss turns NaN from step 3 on (as when an update blows up): the stage stops with
    one line and exit 2, no model is saved, and no checkpoint holds the NaN weights."""
    import shutil

    from transformers import Trainer

    p = warmed_project
    shutil.rmtree(p / "models/warmup")
    compute_loss = Trainer.compute_loss

    def nan_from_step_3(self, *args, **kwargs):
        loss = compute_loss(self, *args, **kwargs)
        return loss * float("nan") if self.state.global_step >= 2 else loss

    monkeypatch.setattr(Trainer, "compute_loss", nan_from_step_3)
    assert main(["warmup", "-S", "warmup.max_steps=8", "-S", "warmup.save_steps=2"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("mmrpt: warmup: training diverged at step 4: non-finite weights")
    assert not (p / "models/warmup/model.safetensors").exists()
    saved = sorted((p / "checkpoints/warmup").glob("checkpoint-*"))
    assert [c.name for c in saved] == ["checkpoint-2"]
    weights = load_file(saved[0] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def _poison(model_dir: Path) -> None:
    weights = load_file(model_dir / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})


def test_no_stage_takes_a_nan_model_as_input(warmed_project: Path, capsys):
    p = warmed_project
    _poison(p / "models/warmup")
    assert main(["score_heads"]) == 2
    err = capsys.readouterr().err
    assert "non-finite weights (NaN or inf)" in err and "models/warmup" in err
    assert not (p / "data/scores/scores.parquet").exists()
    assert not (p / "metrics/score.json").exists()


def test_the_guard_sees_non_finite_logs_and_weights():
    from types import SimpleNamespace

    from mmrpt.guards import Diverged, StopsOnNonFinite

    guard = StopsOnNonFinite()
    state = SimpleNamespace(global_step=7, max_steps=10)
    control = SimpleNamespace(should_save=True)
    guard.on_log(None, state, control, logs={"loss": 1.5, "grad_norm": 0.3})
    for bad in ({"loss": float("nan")}, {"grad_norm": float("inf")}):
        with pytest.raises(Diverged, match="step 7"):
            guard.on_log(None, state, control, logs=bad)
    model = torch.nn.Linear(2, 2)
    guard.on_step_end(None, state, control, model=model)
    with torch.no_grad():
        model.bias[0] = float("inf")
    with pytest.raises(Diverged, match="non-finite weights in 1 tensors"):
        guard.on_step_end(None, state, control, model=model)
    control.should_save = False  # weights are checked only when a checkpoint is due
    guard.on_step_end(None, state, control, model=model)
