"""Seconds per stage run in a main job's (or any workspace's) MLflow store: each run's
start-to-end time, inside the stage process (without its start-up). Used for the partial main
jobs of docs/experiments/results/main_job_*_partial.json, read from the bench's copy before it
is removed (`python bench/main_job.py --keep`, or while it runs).

    python bench/stage_times.py <copy>/mlruns/mlflow.db
"""

from __future__ import annotations

import json
import sqlite3
import sys


def stage_times(db: str) -> dict[str, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        rows = c.execute(
            "select name, start_time, end_time from runs where end_time is not null "
            "order by start_time"
        ).fetchall()
    return {name: round((end - start) / 1000, 1) for name, start, end in rows}


if __name__ == "__main__":
    print(json.dumps(stage_times(sys.argv[1]), indent=1))
