"""The stage contract (mmrpt/contract.py, mmrpt/pipeline.py): dvc.yaml is exactly what the
declarations generate, a stage can read only what it declares, and its resume fingerprint
follows exactly its declared inputs."""

from pathlib import Path

import pytest
import yaml

from mmrpt.config import Params
from mmrpt.contract import ParamsView, Stage, UndeclaredParam, resolve, values
from mmrpt.pipeline import STAGES, context, dvc_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_yaml_is_generated_from_the_declarations():
    """Any difference (a stage's params, deps or outs edited by hand, or a declaration changed
    without regenerating) fails here: run `python -m mmrpt dvc-yaml`."""
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml()


def test_dvc_params_are_the_declared_reads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for s in STAGES:
        assert dvc[s.name]["params"] == list(s.reads), s.name
        for path in s.deps.values():
            assert path in dvc[s.name]["deps"]


@pytest.mark.parametrize("params_file", ["params.yaml", "profiles/real.yaml"])
def test_every_declared_read_is_in_the_complete_params_files(params_file):
    """DVC refuses a stage whose params key is missing from the file ("Parameters ... are
    missing"), so a key added to a declaration must be added to every complete params file."""
    params = yaml.safe_load((ROOT / params_file).read_text())
    missing = []
    for s in STAGES:
        for key in s.reads:
            node = params
            for part in key.split("."):
                if "${" in part or not isinstance(node, dict):
                    break
                if part not in node:
                    missing.append(f"{s.name}: {key}")
                    break
                node = node[part]
    assert missing == []


def test_a_stage_reads_only_what_it_declares():
    params = Params()
    view = ParamsView(params, ("seed", "warmup.prompt", "model.tiny.hidden_size"), "demo")
    assert view.seed == 0 and view.warmup.prompt == "Describe the image."
    assert view.model.tiny.hidden_size == 128
    with pytest.raises(UndeclaredParam, match="demo reads params key 'warmup.lr'"):
        _ = view.warmup.lr
    with pytest.raises(UndeclaredParam, match="'data'"):
        _ = view.data
    with pytest.raises(UndeclaredParam, match="model.tiny.num_layers"):
        _ = view.model.tiny.num_layers
    assert view.model.tiny.model_dump() == {"hidden_size": 128}
    assert view.tracking.experiment == "mmrpt"  # the tracking module's, free for all
    assert view.reads == {"seed", "warmup.prompt", "model.tiny.hidden_size"}
    with pytest.raises(AttributeError, match="read-only"):
        view.seed = 3


def test_a_run_sees_only_its_own_arm():
    ctx = context("rl", Params(), "mmrpt", 1)
    assert list(ctx.params.arms) == ["mmrpt"]
    assert "arms.mmrpt" in ctx.reads and ctx.run_name == "mmrpt-1"
    assert str(ctx.out("model")) == "models/rl/mmrpt-1"
    assert str(ctx.table_path("metrics")) == "metrics/rl/mmrpt-1.json"


def test_templates_resolve_from_params_and_run():
    p = Params()
    assert resolve("${data.out_dir}/x", p) == "data/world/x"
    assert resolve("${rl.out_dir}/${item.arm}-${item.seed}", p, {"arm": "a", "seed": 2}) == (
        "models/rl/a-2"
    )
    assert values(p, ["arms.ntp"]) == {"arms.ntp": p.arms["ntp"].model_dump()}
    with pytest.raises(KeyError, match="per-run"):
        resolve("${item.arm}", p)


def test_declarations_are_checked():
    with pytest.raises(ValueError, match="resume_ignores"):
        Stage("x", reads=("a",), resume_ignores=("b.c",))
    with pytest.raises(ValueError, match="persist"):
        Stage("x", reads=("a",), persist=("ckpt",))


def test_fingerprint_follows_declared_reads_and_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/world").mkdir(parents=True)
    (tmp_path / "data/world/train.jsonl").write_text("a\n")
    fp = lambda **o: context("warmup", Params().model_copy(update=o)).fingerprint()  # noqa: E731
    base = fp()
    warm = Params().warmup
    assert fp(warmup=warm.model_copy(update={"lr": 0.1})) != base  # a declared read
    assert fp(warmup=warm.model_copy(update={"eval_samples": 3})) == base  # resume_ignores
    assert fp(score=Params().score.model_copy(update={"batch_size": 1})) == base  # not read
    (tmp_path / "data/world/train.jsonl").write_text("b\n")  # an input file changed
    assert fp() != base
