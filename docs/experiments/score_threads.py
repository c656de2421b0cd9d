"""Is the score stage thread-count invariant? (docs/LOG.md, 2026-12-04: the deployment test
runs two score workers at one thread each, test_dvc's rerun scores at the default count and
must reproduce dvc.lock.) In a project that has run data, warmup and score_heads, scores the
corpus afresh with OMP_NUM_THREADS=1 and =2 and compares every shard exactly.

    python docs/experiments/score_threads.py PROJECT
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def score(project: Path, threads: int) -> dict[str, pd.DataFrame]:
    shutil.rmtree(project / "data/scores/workers", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "mmrpt", "score", "--worker", "0"]
    subprocess.run(cmd, cwd=project, env=env, check=True, capture_output=True)
    shards = sorted((project / "data/scores/workers/0").glob("*.parquet"))
    return {f.name: pd.read_parquet(f) for f in shards}


def main() -> None:
    project = Path(sys.argv[1])
    one, two = score(project, 1), score(project, 2)
    assert one.keys() == two.keys(), (sorted(one), sorted(two))
    for name in one:
        pd.testing.assert_frame_equal(one[name], two[name], check_exact=True)
    print(f"{len(one)} shards equal at 1 and 2 threads")


if __name__ == "__main__":
    main()
