"""The score stage split over workers (score.workers, one DVC stage each) and over the
processes of a worker (launch.num_processes, torchrun): the merged table equals one worker's,
workers never touch each other's shards, and the merge refuses what does not fit together."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmrpt.cli import main
from mmrpt.scoring import shards as plan

ROOT = Path(__file__).resolve().parents[2]


def table(project: Path) -> pd.DataFrame:
    return pd.read_parquet(project / "data/scores/scores.parquet")


def test_the_plan_covers_the_corpus_once_and_keeps_owners_across_processes():
    corpus = plan.plan([("train", 45), ("dev", 20), ("test", 1)], 20)
    assert [(s.split, s.start, s.stop) for s in corpus] == [
        ("train", 0, 20),
        ("train", 20, 40),
        ("train", 40, 45),
        ("dev", 0, 20),
        ("test", 0, 1),
    ]
    assert corpus[2].name == "train-20-00002.parquet" and corpus[4].index == 4
    for workers, procs in ((1, 1), (2, 1), (2, 2), (3, 2)):
        parts = [
            plan.share(corpus, w, workers, r, procs) for w in range(workers) for r in range(procs)
        ]
        assert sorted(s.index for part in parts for s in part) == list(range(5))
    # a worker owns the same shards whatever its number of processes
    assert plan.share(corpus, 1, 2) == [corpus[1], corpus[3]]
    both = plan.share(corpus, 1, 2, 0, 2) + plan.share(corpus, 1, 2, 1, 2)
    assert sorted(both, key=lambda s: s.index) == [corpus[1], corpus[3]]


@pytest.mark.slow
def test_two_workers_and_two_processes_give_the_scores_of_one(tiny_project: Path):
    p = tiny_project
    assert main(["data"]) == 0 and main(["warmup", "-S", "warmup.max_steps=10"]) == 0
    assert main(["score_heads"]) == 0
    assert main(["score", "--worker", "0"]) == 0 and main(["score_merge"]) == 0
    one = table(p)
    metrics_one = json.loads((p / "metrics/score.json").read_text())

    two = ["-S", "score.workers=[0, 1]"]
    assert main(["score", "--worker", "1", *two]) == 0
    assert main(["score_merge", *two]) == 2  # worker 0 has not scored its half of two yet
    w1 = {f: f.stat().st_mtime_ns for f in (p / "data/scores/workers/1").glob("*.parquet")}
    assert main(["score", "--worker", "0", *two]) == 0  # keeps its shards, drops the others
    assert {f: f.stat().st_mtime_ns for f in w1} == w1  # worker 0 left worker 1's alone
    done = [json.loads((p / f"data/scores/workers/{w}/done.json").read_text()) for w in (0, 1)]
    assert sorted(int(g) for d in done for g in d["shards"]) == list(range(done[0]["num_shards"]))
    assert main(["score_merge", *two]) == 0
    pd.testing.assert_frame_equal(table(p), one, check_exact=True)
    assert json.loads((p / "metrics/score.json").read_text()) == metrics_one
    w0, w1 = (json.loads((p / f"metrics/score/{w}.json").read_text()) for w in (0, 1))
    assert w0["records_scored"] == 0 and w1["records_scored"] == w1["records"]  # 0: resumed
    assert w0["records"] + w1["records"] == len(one.groupby(["split", "sample_id"]))

    # a worker that scored with other params than worker 0 is refused by the merge
    assert main(["score", "--worker", "1", *two, "-S", "score.replacements=1"]) == 0
    assert main(["score_merge", *two]) == 2

    # one worker in two processes (torchrun, gloo), its shards scored afresh
    shutil.rmtree(p / "data/scores/workers/0")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmrpt", "score", "--worker", "0", "-S", "launch.num_processes=2"]
    out = subprocess.run(cmd, cwd=p, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "torch.distributed.run" in out.stderr
    worker = json.loads((p / "metrics/score/0.json").read_text())
    assert worker["num_processes"] == 2 and worker["records_scored"] == worker["records"] > 0
    assert main(["score_merge"]) == 0
    pd.testing.assert_frame_equal(table(p), one, check_exact=True)

    # a worker whose splits leave out the report split: no crash, no report-split metrics
    splits = ["-S", "score.splits=[train, dev]"]
    assert main(["score", "--worker", "0", *splits]) == 0
    assert main(["score_merge", *splits]) == 0
    metrics = json.loads((p / "metrics/score.json").read_text())
    assert "dev/auroc" in metrics and "auroc" not in metrics
    assert set(table(p).split) == {"train", "dev"}
    assert not (p / "data/scores/plots/d_vis_hist.png").exists()
