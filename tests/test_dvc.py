"""DVC as its users run it: `dvc repro` (up to date after the deployment ran every stage),
`dvc exp run -S`, `dvc exp show`, `dvc metrics show`, on a copy of the session's tiny
deployment run (tests/deployed.py: a copy of this repository with tiny params). The same run
records which params each stage really read, against what it declares (mmrpt/pipeline.py)."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from mmrpt.config import DEFAULT_ARMS, Params
from mmrpt.pipeline import STAGES
from tests.deployed import PARAMS

BIN = Path(sys.executable).parent
# Declared keys the embedded run cannot read: they only matter for real sources (data.inputs
# ...), other options (warmup.enabled=false) or multi-process runs.
ONLY_IN_OTHER_CONFIGS = {
    "data.inputs",
    "data.min_sentences",
    "data.max_image_pixels",
    "data.min_image_side",
    "data.max_caption_chars",
    "sft.inputs",
    "sft.image_root",
    "sft.max_text_chars",
    "sft.max_image_pixels",
    "launch.launcher",  # read by the CLI when launch.num_processes > 1
    "launch.backend",  # the score worker's: read when launched
}
# Per stage: keys read only with another option (eval: the outcome tables, eval.outcomes).
ONLY_WITH_OPTIONS = {
    "eval": {
        "eval.outcome_forms",
        "eval.outcome_limit",
        "mask.instruction",
        "mask.think",
        "sft.budgets",
        "sft.steps",
    },
}


def run(args, cwd, env) -> str:
    # A hang guard, not a speed check: `dvc exp run` of one arm takes ~2 minutes on a quiet
    # 2-core machine, several times that beside another test process and a study.
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, f"{args}: {out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def leaves(key: str) -> set[str]:
    """The leaf keys under a declared key (a section's fields, recursively)."""
    from pydantic import BaseModel

    node = Params()
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    if not isinstance(node, BaseModel):
        return {key}
    return set().union(*(leaves(f"{key}.{f}") for f in type(node).model_fields))


GOLDEN = Path(__file__).parent / "golden" / "tiny_pipeline.json"
# (metrics file, key, absolute tolerance): the tiny pipeline's main numbers. Counts are exact;
# losses and AUROC to float noise; accuracies and exact match to one item of their sample.
GOLDEN_KEYS = [
    ("data", "train/n_records", 0),
    ("data", "train/n_vision_dependent", 0),
    ("warmup", "final_train_loss", 1e-4),
    ("warmup", "loss_true_image", 1e-4),
    ("warmup", "image_gain", 1e-4),
    # AUROC moves in steps of 1/(positives x negatives) (~1.7e-4 here): float noise in two
    # near-tied scores flips one pair (seen after scoring moved to its own worker process)
    ("score", "auroc", 1e-3),
    ("score", "auroc_counterfactual", 1e-3),
    ("mask", "attention/train/n_masked", 0),
    ("mask", "attention/test_iid/precision", 1e-6),
    ("primer", "primer_exact_match", 1 / 8),
    *[(f"rl/{a}-0", "exact_match", 1 / 8) for a in DEFAULT_ARMS],
    *[(f"sft/{a}-0", "final_loss", 1e-3) for a in DEFAULT_ARMS],
    *[
        (f"eval/{a}-0", f"{phase}/lmeval/iid/acc", 1 / 20)
        for a in DEFAULT_ARMS
        for phase in ("zero_shot", "sft")
    ],
]


def check_mlflow(repo: Path) -> None:
    """One parent run for the pipeline run, every stage run nested under it and named
    <stage> or <stage>/<arm>-<seed>; one registered model per stage (and arm) with a version
    that loads."""
    import mlflow

    from mmrpt.modeling.loader import load_vlm

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parents) == 1
    children = [
        r.info.run_name
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    ]
    expected = [
        f"{s.name}/{a}-0" if s.per_run else f"{s.name}/{w}" if s.workers else s.name
        for s in STAGES
        for a in (DEFAULT_ARMS if s.per_run else [None])
        for w in (range(PARAMS["score_workers"]) if s.workers else [None])
    ]
    assert sorted(children) == sorted(expected)
    exp = mlflow.get_experiment(parents[0].info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not GenAI
    client = mlflow.MlflowClient()
    names = {m.name for m in client.search_registered_models()}
    assert names == {"mmrpt-warmup", "mmrpt-primer"} | {
        f"mmrpt-{s}-{a}" for s in ("rl", "sft") for a in DEFAULT_ARMS
    }
    path = mlflow.artifacts.download_artifacts("models:/mmrpt-sft-mmrpt/latest")
    model, _ = load_vlm(path)  # the README's one line
    assert model.config.model_type == "qwen2_vl"


def check_golden(repo: Path) -> None:
    """The main numbers of the tiny pipeline equal the committed ones (a change in the numbers
    shows here, and in the diff of tests/golden/ when updated: MMRPT_UPDATE_GOLDEN=1)."""
    got = {
        f"{f}:{k}": json.loads((repo / "metrics" / f"{f}.json").read_text())[k]
        for f, k, _ in GOLDEN_KEYS
    }
    if os.environ.get("MMRPT_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    for (_, _, tol), key in zip(GOLDEN_KEYS, got, strict=True):
        assert got[key] == pytest.approx(want[key], abs=tol), (key, got[key], want[key])


@pytest.mark.slow
def test_dvc_repro_exp_and_metrics(deployed, tmp_path: Path):
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    # the session's deployment run (tests/deployed.py) ran every stage through DVC's graph,
    # one `dvc repro --single-item` each: on a copy, `dvc repro` has nothing left to do
    repo = shutil.copytree(deployed.work, tmp_path / "repo", symlinks=True)
    reads = deployed.reads
    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again and "up to date" in again
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "repro"], repo, env)

    # every declared param was read by its stage (reading an undeclared one fails the stage)
    read: dict[str, set] = defaultdict(set)
    for line in reads.read_text().splitlines():
        r = json.loads(line)
        read[r["stage"]] |= {k.split(".")[0] if k.startswith("arms.") else k for k in r["reads"]}
    for s in STAGES:
        declared = set().union(*(leaves(k) for k in s.reads if "${" not in k))
        templated = {
            k
            for t in (*s.deps.values(), *s.outs.values(), *s.scratch.values())
            for k in re.findall(r"\$\{([\w.]+)\}", t)
            if not k.startswith("item")
        }
        unread = (
            declared
            - read[s.name]
            - templated
            - ONLY_IN_OTHER_CONFIGS
            - ONLY_WITH_OPTIONS.get(s.name, set())
        )
        assert not unread, f"stage {s.name} declares params it never read: {sorted(unread)}"

    check_golden(repo)

    # DVC's metrics are the narrow headline: a row per run, a few shared keys
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env))
    files = metrics[""]["data"]  # the workspace
    assert set(files) == {"metrics/run/primer.json"} | {
        f"metrics/run/{a}-0.json" for a in DEFAULT_ARMS
    }
    assert {"masked_em", "iid_acc", "counter_acc"} <= set(files["metrics/run/mmrpt-0.json"]["data"])
    table = run(["dvc", "metrics", "show"], repo, env)
    assert max(map(len, table.splitlines())) <= 200, table
    check_mlflow(repo)
    # same code, same seed: deleting the outputs and reproducing gives the same files (the
    # arms ran at one thread each in the deployment: a plain rerun at two gives other floats)
    for folder in ("data", "models", "checkpoints", ".mmrpt"):
        shutil.rmtree(repo / folder)
    run(["dvc", "repro", "primer"], repo, env)
    status = run(["git", "status", "--porcelain"], repo, env)
    assert status == "", status

    report = json.loads((repo / "metrics/report.json").read_text())
    assert set(DEFAULT_ARMS) <= set(report["zero_shot"]["lmeval/iid/acc"])
    assert (repo / "reports/report.md").read_text().startswith("# MMRPT")

    # an ablation is one more params entry: only its own arm stages (and the report) run
    out = run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "+arms.no_visual={objective: grpo, reward_weights: {exact: 1, format: 0.2}}",
            "-n",
            "ablation",
        ],
        repo,
        env,
    )
    assert "Running stage 'rl@no_visual-0'" in out and "Running stage 'rl@mmrpt-0'" not in out
    assert "Running stage 'report'" in out and "Running stage 'eval@mmrpt-0'" not in out
    flat = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], repo, env)))
    assert '"ablation"' in flat and '"no_visual"' in flat


def stale_records(status: dict, tracked: set[str]) -> list[str]:
    """What `dvc status --json` says the committed dvc.lock no longer matches in the files git
    tracks (code, params): a fresh clone's `make main` would rewrite those records. Outputs
    and data that a clone lacks ("deleted") are not counted."""
    stale = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed"
                stale.append(f"{stage}: {change}")
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # params: {key: "modified" | "new" | "deleted"}
                    stale += [f"{stage}: {path}:{k} {v}" for k, v in state.items()]
                elif path in tracked and state != "deleted":
                    stale.append(f"{stage}: {path} {state}")
    return stale


def test_stale_records_are_code_and_params_only():
    status = {
        "report": [
            {"changed deps": {"mmrpt/report": "modified", "data/world": "deleted"}},
            {"changed outs": {"reports": "deleted"}},
        ],
        "warmup": [{"changed deps": {"params.yaml": {"warmup.lr": "modified"}}}, "changed command"],
        "data": [{"changed outs": {"data/world": "deleted"}}],
    }
    assert stale_records(status, {"mmrpt/report", "params.yaml"}) == [
        "report: mmrpt/report modified",
        "warmup: params.yaml:warmup.lr modified",
        "warmup: changed command",
    ]


def test_committed_lock_matches_the_code():
    """`make main` on a fresh clone leaves `git status` clean only if dvc.lock records the
    code and params that are committed: a change to a stage's code needs the main job rerun
    and its dvc.lock (and outputs) committed with it."""
    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    tracked = {*files, *(str(d) for f in files for d in Path(f).parents if str(d) != ".")}
    out = subprocess.run(
        [str(BIN / "dvc"), "status", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stale = stale_records(json.loads(out.stdout or "{}"), tracked)
    assert not stale, "dvc.lock is older than the code (rerun `make main`, commit it):\n" + (
        "\n".join(stale)
    )
