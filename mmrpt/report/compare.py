"""`python -m mmrpt compare`: a table of selected MLflow runs (pandas) and a bar plot."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mmrpt import tracking
from mmrpt.config import load_params
from mmrpt.report.plots import bar_plot


def compare_table(runs: pd.DataFrame, metrics: list[str], params: list[str]) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame()
    cols = {"run_id": runs["run_id"].str[:8], "run": runs.get("tags.mlflow.runName"),
            "start": runs["start_time"].dt.strftime("%m-%d %H:%M"), "status": runs["status"]}
    for p in params:
        cols[p] = runs.get(f"params.{p}")
    for m in metrics:
        cols[m] = runs.get(f"metrics.{m}")
    return pd.DataFrame(cols)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmrpt compare",
                                 description="Compare MLflow runs of one stage.")
    ap.add_argument("--stage", default="warmup", help="runs named after this stage")
    ap.add_argument("--metrics", default="eval/image_gain,eval/loss_true_image",
                    help="comma-separated metric names")
    ap.add_argument("--params", default="seed", help="comma-separated param names")
    ap.add_argument("--max-runs", type=int, default=20)
    ap.add_argument("--out", default="compare.png", help="bar plot of the first metric")
    ap.add_argument("--params-file", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params_file)
    metrics = [m for m in args.metrics.split(",") if m]
    table = compare_table(tracking.search_stage_runs(params, args.stage, args.max_runs),
                          metrics, [p for p in args.params.split(",") if p])
    if table.empty:
        print(f"no MLflow runs named {args.stage!r} in {params.tracking.tracking_uri}")
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table.to_string(index=False))
    if metrics and table[metrics[0]].notna().any():
        bar_plot(table["run_id"], table[metrics[0]], metrics[0], Path(args.out))
        print(f"plot: {args.out}")
    return 0
