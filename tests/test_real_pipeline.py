"""The real-data profile end to end (issue 15), offline: a config-built Qwen2.5-VL with the real
token layout (151,936 vocabulary, the Instruct chat template and generation config), a local
caption corpus (JSONL, JPEG and PNG of mixed sizes, captions with abbreviations), a LLaVA JSON
and a local MMStar.tsv in VLMEvalKit's format. Every stage runs through the CLI with
profiles/real.yaml (tiny sizes on top) and exits 0, the report has the arm table over MMStar,
and no socket connects. Then, on the same project: a split the data lacks fails before any
work (exit 2, naming the param), finished score shards survive a change of score.splits, and
DVC reruns exactly the stages whose input folder changed."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmrpt.cli import main
from mmrpt.config import load_params
from tests.conftest import ROOT, copy_repo
from tests.real_data import write_corpus, write_llava, write_mmstar

ARMS = ("ntp", "masked_sft", "random_mask", "mmrpt")
TINY_REAL = {
    "model": {"min_pixels": 3136, "max_pixels": 12544},  # 4..16 image tokens
    "warmup": {
        "enabled": True,
        "max_steps": 2,
        "batch_size": 4,
        "save_steps": 2,
        "eval_samples": 4,
    },
    "score": {"batch_size": 8, "replacements": 1, "shard_size": 8},
    "mask": {"gallery_samples": 2},
    "primer": {
        "n_samples": 6,
        "max_steps": 2,
        "batch_size": 4,
        "eval_samples": 3,
        "max_new_tokens": 8,
    },
    "rl": {
        "steps": 1,
        "batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 8,
        "save_steps": 1,
        "eval_samples": 3,
        "log_completions_steps": 0,
    },
    "sft": {"steps": 1, "batch_size": 4, "save_steps": 1},
    "eval": {"masked_samples": 3, "blank": False},
}


def real_project(tmp_path: Path) -> Path:
    from mmrpt.modeling.qwen_layout import build_qwen25_vl
    from tests.real_data import CAPTIONS

    repo = copy_repo(tmp_path / "repo")
    write_corpus(repo / "inputs/corpus", {"train": 12, "val": 4, "test": 4})
    write_llava(repo / "inputs/sft", n=6)
    write_mmstar(repo / "inputs/benchmarks", n=6)
    base = build_qwen25_vl(CAPTIONS * 20, tmp_path / "qwen25vl")
    params = yaml.safe_load((ROOT / "profiles/real.yaml").read_text())
    for section, values in TINY_REAL.items():
        params[section] = {**params[section], **values}
    params["model"]["path"] = str(base)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(repo / "params.yaml")  # valid
    return repo


@pytest.mark.slow
def test_real_profile_runs_every_stage_offline(tmp_path: Path, monkeypatch, capsys):
    repo = real_project(tmp_path)
    monkeypatch.chdir(repo)
    connects = []

    def no_network(self, address):
        connects.append(address)
        raise OSError(f"network access to {address} in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    stages = (["data"], ["warmup"], ["score_heads"], ["score", "--worker", "0"], ["score_merge"])
    for args in (*stages, ["mask"], ["primer"]):
        assert main(args) == 0, args
    for arm in ARMS:
        for stage in ("rl", "sft", "eval"):
            assert main([stage, "--arm", arm, "--seed", "0"]) == 0, (stage, arm)
    assert main(["report"]) == 0
    assert connects == []

    # data: real-format ingest, the 6000x28 images refused with the reason, sentences whole
    data = json.loads((repo / "metrics/data.json").read_text())
    assert (
        data["train/n_accepted"] == 12 and data["train/rejected/image aspect ratio over 200"] == 1
    )
    first = json.loads((repo / "data/world/train.jsonl").read_text().splitlines()[0])
    assert [first["caption"][s["start"] : s["end"]] for s in first["sentences"]] == [
        "Dr. Lee stands next to a red car on a quiet street.",
        "The photo was taken at 5 p.m. in late autumn.",
        "A sign nearby reads 3.5 m.",
    ]
    warmup = json.loads((repo / "metrics/warmup.json").read_text())
    assert "image_gain" in warmup and "loss_true_image_independent" not in warmup  # no labels
    # score: label-free, NaN-free (no AUROC without labels), the paper's band
    score = (repo / "metrics/score.json").read_text()
    assert "NaN" not in score and "auroc" not in score
    assert json.loads(score)["heads"] == {"1": [0, 1]}  # band [0.5, 0.75) of 2 layers
    # sft: one row per LLaVA conversation (single, two-image and text-only)
    sft = json.loads((repo / "metrics/sft/mmrpt-0.json").read_text())
    assert sft["n_rows"] == 6 and sft["n_rejected"] == 0
    # eval: MMStar from the local TSV, masked-span EM on both held-out splits
    ev = json.loads((repo / "metrics/eval/mmrpt-0.json").read_text())
    for phase in ("zero_shot", "sft"):
        assert 0 <= ev[f"{phase}/vlmeval/MMStar/acc"] <= 1
        assert {f"{phase}/masked_em/val", f"{phase}/masked_em/test"} <= set(ev)
    assert sorted(p.name for p in (repo / "inputs/benchmarks").iterdir()) == [
        "MMStar.tsv",
        "README.md",
    ]
    # report: the arm table over MMStar and masked EM, claims on them
    md = (repo / "reports/report.md").read_text()
    assert "| arm | VLMEvalKit MMStar | masked-span EM test | masked-span EM val |" in md
    assert all(f"| {arm} | " in md for arm in ARMS)
    claims = json.loads((repo / "metrics/report.json").read_text())["claims"]
    assert "sft/vlmeval/MMStar/acc/mmrpt_beats_ntp_and_masked_sft" in claims
    assert (repo / "reports/arms_sft.png").stat().st_size > 0

    # a split the data lacks fails before any work, naming the param
    capsys.readouterr()
    assert main(["mask", "-S", "mask.splits=[train, dev]"]) == 2
    assert "mask.splits" in capsys.readouterr().err
    # finished shards survive a change of score.splits
    shards = {p: p.stat().st_mtime_ns for p in (repo / "data/scores/workers").rglob("*.parquet")}
    assert shards
    assert main(["score", "--worker", "0", "-S", "score.splits=[train, val]"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in shards.items())

    # DVC: record this run, then change one input folder at a time
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def dvc(*args) -> str:
        out = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    dvc("config", "cache.type", "hardlink,symlink")
    dvc("commit", "-f")  # record this run as DVC's lock

    def changed() -> set[str]:
        return set(json.loads(dvc("status", "--json")))

    assert changed() == set()
    mmstar = repo / "inputs/benchmarks/MMStar.tsv"
    llava = repo / "inputs/sft/llava.json"
    saved = {f: f.read_bytes() for f in (mmstar, llava)}
    write_mmstar(repo / "inputs/benchmarks", n=5)
    assert changed() == {f"eval@{arm}-0" for arm in ARMS}
    llava.write_text("[]")
    assert changed() == {f"eval@{arm}-0" for arm in ARMS} | {f"sft@{arm}-0" for arm in ARMS}
    for f, content in saved.items():
        f.write_bytes(content)
    assert changed() == set()
    with open(repo / "inputs/corpus/test.jsonl", "a") as f:
        f.write('{"id": "new", "image": "img/test-0.png", "caption": "One. Two."}\n')
    assert changed() == {"data"}
