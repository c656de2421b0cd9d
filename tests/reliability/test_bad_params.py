"""Bad params fail before any work, naming the key: contradictory settings through the CLI,
layer/head indices the loaded model does not have, and Prefect deployment parameters.

Wrong types, out-of-range values and unknown keys in params.yaml and -S overrides are in
tests/test_config.py; here are the combinations and the checks that need the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from mmrpt.cli import main
from mmrpt.config import ParamsError, load_params

CONTRADICTIONS = [  # (overrides, text the error must contain: the key)
    (["mask.selectors=[attention, random, counterfactual]"], "score.counterfactual_train"),
    (["mask.selectors=[random, attention]"], "mask.selectors"),
    (["mask.selectors=[attention, label]"], "arms.random_mask.masks"),  # its masks are gone
    (["score.diagnostic_split=test_iid"], "score.diagnostic_split"),
    (["score.layer_band=[0.8, 0.2]"], "score.layer_band"),
    (["score.text_keys=[]"], "score.text_keys"),
    (["rl.num_generations=1"], "rl.num_generations"),
    (["rl.reward_weights={exact: 0, format: 0}"], "rl.reward_weights"),
    (["rl.reward_weights={exakt: 1.0}"], "rl.reward_weights"),
    (["launch.deepspeed=no/such/zero2.json"], "launch.deepspeed"),
    # batch params are global batches: each of launch.num_processes takes an equal share
    (["launch.num_processes=3"], "warmup.batch_size=8 is a global batch"),
    (["launch.num_processes=2", "sft.batch_size=5"], "sft.batch_size=5"),
    (["launch.num_processes=2", "rl.batch_size=3"], "rl.batch_size=3"),  # ntp, sft arms
    (  # grpo arms only: the rollouts must divide, not the prompts
        ["arms={mmrpt: {objective: grpo}}", "launch.num_processes=4", "rl.batch_size=3"],
        "rl.batch_size x rl.num_generations = 6 rollouts per step must be divisible by "
        "launch.num_processes x rl.micro_batches = 4 x 1",
    ),
    (["rl.micro_batches=3"], "launch.num_processes x rl.micro_batches = 1 x 3"),
    (["score.workers=[1]"], "score.workers"),
    (["launch.lora.target_modules=[]"], "launch.lora.target_modules"),
    (["data.source=jsonl", "data.inputs={test_iid: x.jsonl}"], "data.inputs"),
    (["data.inputs={train: x.jsonl}"], "data.inputs"),  # inputs with the synthetic source
    (["warmup.enabled=false"], "warmup.enabled"),  # the tiny model must be warmed up
]


@pytest.mark.parametrize(
    "overrides, key", CONTRADICTIONS, ids=[" ".join(o) for o, _ in CONTRADICTIONS]
)
def test_contradictory_params_fail_before_any_work(tiny_project: Path, capsys, overrides, key):
    args = [a for o in overrides for a in ("-S", o)]
    assert main(["rl", "--arm", "mmrpt", "--seed", "0", *args]) == 2
    assert key in capsys.readouterr().err
    assert [p.name for p in tiny_project.iterdir()] == ["params.yaml"]  # nothing written


def _mlflow_runs(project: Path) -> list:
    if not (project / "mlruns/mlflow.db").exists():
        return []
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_layer_and_head_indices_beyond_the_model_fail_before_scoring(warmed_project: Path, capsys):
    """The model's depth is known only once it is loaded (model.path can be any VLM): the
    score stage checks score.layers / score.heads right after loading, before any pass."""
    depth = json.loads((warmed_project / "models/warmup/config.json").read_text())
    n_layers = depth.get("text_config", depth)["num_hidden_layers"]
    assert n_layers == 2
    for setting, message in (
        ("score.layers=[0, 2]", "score.layers=[0, 2] out of range: the model has 2 layers"),
        ("score.layers=[-1]", "score.layers=[-1] out of range"),
        ("score.layers=[]", "score.layers=[] out of range"),
        ("score.heads=[1, 2]", "score.heads=[1, 2] out of range"),
    ):
        args = ["score_heads", "-S", "score.select=band", "-S", setting]
        assert main(args) == 2, setting
        assert message in capsys.readouterr().err
        assert not (warmed_project / "data/scores").exists()
        assert not (warmed_project / "metrics/score.json").exists()
        assert not _mlflow_runs(warmed_project)  # no score run was even started


class _Built(Exception):
    def __init__(self, config):
        self.config = config


@pytest.mark.parametrize("batch_size, num_generations", [(1, 2), (3, 5), (4, 2), (2, 16)])
def test_group_size_cannot_contradict_batch(tmp_path, monkeypatch, batch_size, num_generations):
    """TRL needs its generation batch divisible by the group size (else GRPOConfig raises).
    Our per-device batch is rl.batch_size x rl.num_generations, so every pair the schema
    admits gives a config TRL accepts; a group of 1 is refused by the schema."""
    from mmrpt.rl import grpo

    real = grpo.GRPOConfig

    def build(**kwargs):
        raise _Built(real(**kwargs))  # TRL's own validation runs here

    monkeypatch.setattr(grpo, "GRPOConfig", build)
    (tmp_path / "params.yaml").write_text("{}")
    rp = load_params(
        tmp_path / "params.yaml",
        [f"rl.batch_size={batch_size}", f"rl.num_generations={num_generations}"],
    ).rl
    with pytest.raises(_Built) as built:
        grpo.make_grpo_trainer(
            None,
            SimpleNamespace(tokenizer=SimpleNamespace()),
            None,
            out_dir=tmp_path,
            steps=rp.steps,
            batch_size=rp.batch_size,
            num_generations=rp.num_generations,
            temperature=rp.temperature,
            lr=rp.lr,
            beta=rp.beta,
            loss_type=rp.loss_type,
            max_completion_length=rp.max_completion_length,
            reward_weights=rp.reward_weights,
            save_steps=rp.save_steps,
            seed=0,
        )
    cfg = built.value.config
    assert cfg.num_generations == num_generations
    assert cfg.per_device_train_batch_size == batch_size * num_generations
    assert cfg.generation_batch_size % num_generations == 0


DEPLOYMENT_PARAMETERS = [  # (flow run parameters as a deployment run passes them, key)
    ({"overrides": {"warmup.max_stepz": 5}}, "warmup.max_stepz"),
    ({"overrides": {"rl.num_generations": 1}}, "rl.num_generations"),
    ({"overrides": {"score.layer_band": [0.9, 0.1]}, "seed": 3}, "score.layer_band"),
    ({"overrides": {"data.source": "csv"}}, "data.source"),
    ({"overrides": {"warmup.lr": "fast"}}, "warmup.lr"),
    ({"overrides": {"seed": "one"}}, "seed"),
]


@pytest.mark.parametrize(
    "parameters, key", DEPLOYMENT_PARAMETERS, ids=[k for _, k in DEPLOYMENT_PARAMETERS]
)
def test_bad_deployment_parameters_fail_before_any_stage(tiny_project: Path, parameters, key):
    """`prefect deployment run --params ...`: Prefect checks the types of the flow's
    signature, then the flow validates the overrides with the params.yaml schema before it
    opens an MLflow run or starts a stage (nothing appears in the working directory)."""
    from flows.pipeline import pipeline

    validated = pipeline.validate_parameters({**parameters, "workdir": str(tiny_project)})
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        pipeline.fn(**validated)
    assert [p.name for p in tiny_project.iterdir()] == ["params.yaml"]
