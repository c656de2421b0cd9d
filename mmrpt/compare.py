"""`python -m mmrpt compare`: a table of selected MLflow runs (pandas) and bar plots."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mmrpt import tracking
from mmrpt.report.plots import bar_plots


def compare_table(runs: pd.DataFrame, metrics: list[str], params: list[str]) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame()
    cols = {
        "run_id": runs["run_id"].str[:8],
        "run": runs.get("tags.mlflow.runName"),
        "start": runs["start_time"].dt.strftime("%m-%d %H:%M"),
        "status": runs["status"],
    }
    for p in params:
        cols[p] = runs.get(f"params.{p}")
    for m in metrics:
        cols[m] = runs.get(f"metrics.{m}")
    return pd.DataFrame(cols)


def compare(
    params,
    stage: str,
    metrics: list[str],
    param_names: list[str],
    max_runs: int = 20,
    out: Path = Path("compare.png"),
) -> int:
    """Print the table of the latest ``max_runs`` runs of ``stage`` and plot ``metrics``."""
    table = compare_table(tracking.search_stage_runs(params, stage, max_runs), metrics, param_names)
    if table.empty:
        print(f"no MLflow runs of stage {stage!r} in {params.tracking.tracking_uri}")
        return 1
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(table.to_string(index=False))
    present = [m for m in metrics if m in table and table[m].notna().any()]
    if present:
        bar_plots(
            table["run"].fillna(table["run_id"]),
            table[present],
            out,
            title=f"{stage}: {', '.join(present)} per run",
        )
        print(f"plot: {out}")
    return 0
