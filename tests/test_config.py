from pathlib import Path

import pytest
import yaml

from mmrpt.config import DEFAULT_ARMS, Params, ParamsError, load_params
from mmrpt.pipeline import NAMES, PER_RUN, STAGES

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "synthetic" and p.model.path is None


def write(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"warmup": {"lrr": 0.1}}, "warmup.lrr"),
        ({"dta": {}}, "dta"),
        ({"warmup": {"lr": -1}}, "warmup.lr"),
        ({"warmup": {"batch_size": "many"}}, "warmup.batch_size"),
        ({"data": {"image_size": 100}}, "data.image_size"),
        ({"data": {"source": "csv"}}, "data.source"),
        ({"data": {"source": "jsonl"}}, "data.inputs"),
        ({"model": {"tiny": {"hidden_size": 100, "num_heads": 3}}}, "hidden_size / num_heads"),
        ({"warmup": {"enabled": False}}, "warmup.enabled"),
    ],
)
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
    """Stage names = params.yaml sections (score_heads, score_merge: score's) = stage modules = dvc.yaml
    stages and commands."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert tuple(dvc["stages"]) == NAMES
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    sections = {s.params_section for s in STAGES}
    assert sections <= set(raw) and sections <= set(Params.model_fields)
    assert [s.name for s in STAGES if s.section] == ["score_heads", "score_merge"]
    for stage in NAMES:
        assert (ROOT / "mmrpt" / "stages" / f"{stage}.py").exists()
        assert dvc["stages"][stage]["cmd"].startswith(f"python -m mmrpt {stage}")
    for stage in PER_RUN:  # once per arm x replicate seed, both from params.yaml
        assert dvc["stages"][stage]["matrix"] == {"arm": "${arms}", "seed": "${seeds}"}
    assert dvc["stages"]["score"]["matrix"] == {"worker": "${score.workers}"}


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize(
    "key",
    [
        "warmup.weight_decay",
        "rl.temperature",
        "rl.beta",
        "mask.k",
        "rl.reward_weights.visual",
        "arms.mmrpt.lr",
    ],
)
def test_every_float_is_finite(tmp_path, key, value):
    with pytest.raises(ParamsError, match=key.split(".")[0]):
        load_params(write(tmp_path, {}), [f"{key}={value}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("arms.mmrpt.masks=label", "not in mask.selectors"),
        ("arms.new_arm.objective=rlhf", "objective"),
        ("arms.masked_sft.reward_weights={exact: 1}", "only apply to objectives grpo and rft"),
        ("arms.mmrpt.reward_weights={exact: 0}", "at least one > 0"),
        ("arms.mmrpt.reward_weights={speed: 1}", "unknown terms"),
        ("arms={../x: {objective: sft}}", "folder names"),
        ("seed=-1", "seed"),
    ],
)
def test_arms_are_validated(tmp_path, override, message):
    arms = {name: arm.model_dump() for name, arm in DEFAULT_ARMS.items()}
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, {"arms": arms}), [override])


def test_an_arm_is_a_params_entry(tmp_path):
    p = load_params(
        write(tmp_path, {}),
        ["arms.no_visual.objective=grpo", "arms.no_visual.reward_weights={exact: 1, format: 1}"],
    )
    assert list(p.arms)[-1] == "no_visual"
    assert p.arms["no_visual"].reward_weights == {"exact": 1.0, "format": 1.0}


def test_real_profile_is_a_complete_valid_params_file():
    """profiles/real.yaml names every key params.yaml does (DVC interpolates paths and
    tracks params from the file itself) and derives its splits from data.inputs."""

    def leaves(d, pre=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("inputs", "arms", "reward_weights"):
                yield from leaves(v, f"{pre}{k}.")
            else:
                yield pre + k

    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    real = yaml.safe_load((ROOT / "profiles/real.yaml").read_text())
    assert set(leaves(real)) == set(leaves(shipped))
    p = load_params(ROOT / "profiles/real.yaml")
    assert p.score.splits == p.mask.splits == ["train", "val", "test"]
    assert p.eval.splits == p.rl.eval_splits == ["val", "test"]
    assert (p.primer.eval_split, p.score.select, p.eval.benchmarks_local) == ("val", "band", True)


def test_split_defaults_follow_data_inputs(tmp_path):
    real = {"data": {"source": "jsonl", "inputs": {"train": "a", "val": "b"}}}
    p = load_params(write(tmp_path, real))
    assert p.score.splits == ["train", "val"] and p.eval.splits == ["val"]
    assert (p.score.diagnostic_split, p.score.report_split) == ("val", None)
    only_train = {"data": {"source": "jsonl", "inputs": {"train": "a"}}}
    p = load_params(write(tmp_path, only_train))
    assert p.eval.splits == [] and p.primer.eval_split is None
    world = load_params(write(tmp_path, {}))  # the synthetic world's four splits
    assert world.score.splits == ["train", "dev", "test_iid", "test_counter"]
    assert (
        world.eval.splits == ["test_iid", "test_counter"] and world.primer.eval_split == "test_iid"
    )
