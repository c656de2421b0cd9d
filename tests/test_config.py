from pathlib import Path

import pytest
import yaml

from mmrpt.config import ARMS, STAGES, Params, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "synthetic" and p.model.path is None


def write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("raw, key", [
    ({"warmup": {"lrr": 0.1}}, "warmup.lrr"),
    ({"dta": {}}, "dta"),
    ({"warmup": {"lr": -1}}, "warmup.lr"),
    ({"warmup": {"batch_size": "many"}}, "warmup.batch_size"),
    ({"data": {"image_size": 100}}, "data.image_size"),
    ({"data": {"source": "csv"}}, "data.source"),
    ({"data": {"source": "jsonl"}}, "data.inputs"),
    ({"model": {"tiny": {"hidden_size": 100, "num_heads": 3}}}, "hidden_size / num_heads"),
    ({"warmup": {"enabled": False}}, "warmup.enabled"),
])
def test_bad_params_name_the_key(tmp_path, raw, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.").replace("/", "/")):
        load_params(write(tmp_path, raw))


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, {})
    assert load_params(path, ["warmup.lr=0.5"]).warmup.lr == 0.5
    assert load_params(path, {"data.n_train": 7}).data.n_train == 7
    with pytest.raises(ParamsError, match="warmup.nope"):
        load_params(path, ["warmup.nope=1"])
    with pytest.raises(ParamsError, match="key=value"):
        load_params(path, ["warmup.lr"])


def test_stage_names_agree_everywhere():
    """dvc.yaml stages, the stage list, params.yaml sections and stage modules match."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert tuple(dvc["stages"]) == STAGES
    for stage in ("rl", "sft", "eval"):  # once per arm x replicate seed
        assert tuple(dvc["stages"][stage]["matrix"]["arm"]) == ARMS
        assert dvc["stages"][stage]["matrix"]["seed"] == "${seeds}"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(STAGES) <= set(raw) and set(STAGES) <= set(Params.model_fields)
    for stage in STAGES:
        assert (ROOT / "mmrpt" / "stages" / f"{stage}.py").exists()
        assert dvc["stages"][stage]["cmd"].startswith(f"python -m mmrpt {stage}")
