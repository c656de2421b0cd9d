"""Score stage throughput at 1 vs 2 workers on the same run: records scored per second of wall
time, from the command's start to the merged table (what a user or the Prefect flow waits).

One project (data, a short warmup of the embedded model and score_heads, the heads all
workers use, made once in a temp folder; score_heads' time is reported apart: it does not
depend on the number of workers), then rounds of, interleaved, each from empty worker
folders:
- 1w x1t : one worker, one process, 1 torch thread      (`score --worker 0`)
- 1w x2t : one worker, one process, 2 torch threads (only with --threads2: on a shared
           machine a 2-thread pass stalls whenever another job holds a core; docs/LOG.md)
- 2w     : two workers at once, 1 thread each           (score@0 and score@1, as the flow
           runs them with max_parallel 2), then score_merge
- 1w x2p : one worker in 2 processes (torchrun, gloo), 1 thread each, then score_merge
Each worker process loads the model and scores its shards; the merge reads them all. Besides
the wall time, the split of it: each worker's shard loop (the `seconds` its MLflow run logs:
scoring only, no start-up) and the merge command.

    python bench/score_workers.py [--records 1000] [--rounds 2] [--threads2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env(threads: int) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    }


def mmrpt(args: list[str], cwd: Path, threads: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmrpt", *args],
        cwd=cwd,
        env=env(threads),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(*procs: subprocess.Popen) -> None:
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(err[-3000:])


def setup(project: Path, records: int) -> tuple[int, float]:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["n_train"] = records
    params["warmup"]["max_steps"] = 50
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    wait(mmrpt(["data"], project, 1))
    wait(mmrpt(["warmup"], project, 1))
    t0 = time.perf_counter()
    wait(mmrpt(["score_heads"], project, 1))
    heads_s = time.perf_counter() - t0
    n = sum(
        sum(1 for _ in open(project / f"data/world/{s}.jsonl")) for s in params["score"]["splits"]
    )
    return n, heads_s


def loop_seconds(project: Path, workers: int) -> list[float]:
    """The shard-loop seconds of the latest run of each score worker (MLflow)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        filter_string="tags.stage = 'score'",
        order_by=["attributes.start_time DESC"],
    )
    latest = {}
    for r in runs:
        latest.setdefault(r.data.tags["worker"], r.data.metrics["seconds"])
    return [round(latest[str(w)], 1) for w in range(workers)]


def timed(project: Path, variant: str) -> dict:
    shutil.rmtree(project / "data/scores/workers", ignore_errors=True)
    two = ["-S", "score.workers=[0, 1]"]
    t0 = time.perf_counter()
    if variant == "2w":
        wait(*(mmrpt(["score", "--worker", str(w), *two], project, 1) for w in (0, 1)))
        merge = ["score_merge", *two]
    else:
        extra = ["-S", "launch.num_processes=2"] if variant == "1w x2p" else []
        threads = 2 if variant == "1w x2t" else 1
        wait(mmrpt(["score", "--worker", "0", *extra], project, threads))
        merge = ["score_merge"]
    t1 = time.perf_counter()
    wait(mmrpt(merge, project, 1))
    t2 = time.perf_counter()
    return {
        "wall_s": t2 - t0,
        "merge_s": round(t2 - t1, 1),
        "loop_s": loop_seconds(project, 2 if variant == "2w" else 1),
    }


VARIANTS = ("1w x1t", "2w", "1w x2p")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1000, help="train records (data.n_train)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads2", action="store_true", help="also one worker, 2 threads")
    ap.add_argument("--json")
    args = ap.parse_args()
    variants = (*VARIANTS, "1w x2t") if args.threads2 else VARIANTS
    project = Path(tempfile.mkdtemp(prefix="mmrpt-score-workers-"))
    try:
        n, heads_s = setup(project, args.records)
        walls: dict[str, list[float]] = {v: [] for v in variants}
        parts: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                t = timed(project, v)
                walls[v].append(t.pop("wall_s"))
                parts[v].append(t)
                print(f"{v}: {walls[v][-1]:.1f} s {t}", flush=True)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    base = statistics.median(walls["1w x1t"])
    res = {
        "records": n,
        "score_heads_s": round(heads_s, 1),
        "rounds": args.rounds,
        "load_avg_end": os.getloadavg(),
        "variants": {
            v: {
                "wall_s": [round(w, 1) for w in ws],
                "median_wall_s": round(statistics.median(ws), 1),
                "records_per_s": round(n / statistics.median(ws), 2),
                "speedup_vs_1w_x1t": round(base / statistics.median(ws), 2),
                "merge_s": [p["merge_s"] for p in parts[v]],
                "shard_loop_s": [p["loop_s"] for p in parts[v]],  # per worker (rank 0's)
            }
            for v, ws in walls.items()
        },
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
