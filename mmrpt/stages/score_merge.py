"""Stage `score_merge`: the score workers' shards as one table, and the score metrics.

Reads each worker's folder (stage `score`, one per entry of score.workers): every worker must
have finished for the current number of workers and scored with the same params, inputs and
heads (equal fingerprints: heads.json is one of the inputs), and together they must hold every shard of the corpus exactly
once; anything else is refused with the worker to rerun. The table is in corpus order, so it
is the same whatever the number of workers and processes. Writes scores.parquet, AUROC of
D_vis (and of the counterfactual score) on the diagnostic and report splits with
score_heads' per-layer diagnostics to metrics/score.json, the per-head AUROC heatmap and the D_vis
histogram (report split, when scored).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.io import write_csv_atomic, write_json_atomic, write_parquet_atomic
from mmrpt.report.plots import head_heatmap, score_histogram
from mmrpt.safety import empty_owned
from mmrpt.scoring.layers import auroc
from mmrpt.scoring.shards import DONE

log = logging.getLogger(__name__)


def shard_files(base: Path, num_workers: int) -> list[Path]:
    """The shard files of all workers in corpus order, checked complete and consistent."""
    done, stamps = {}, {}
    for w in range(num_workers):
        folder = base / str(w)
        if not (folder / DONE).exists():
            raise ParamsError(f"score worker {w} has not finished: run score@{w}")
        done[w] = json.loads((folder / DONE).read_text())
        stamps[w] = (folder / "fingerprint.txt").read_text().strip()
        if done[w]["num_workers"] != num_workers:
            raise ParamsError(
                f"score worker {w} scored its share of {done[w]['num_workers']} workers, not "
                f"{num_workers}: rerun score@{w}"
            )
    stale = [w for w in done if stamps[w] != stamps[0]]
    if stale:
        raise ParamsError(
            f"score workers {stale} scored with other params, inputs or heads than worker 0: "
            f"rerun score@{', score@'.join(map(str, stale))}"
        )
    total = {d["num_shards"] for d in done.values()}
    owned = {
        int(g): base / str(w) / name for w, d in done.items() for g, name in d["shards"].items()
    }
    if len(total) != 1 or sorted(owned) != list(range(total.pop())):
        raise ParamsError("score workers disagree on the corpus: rerun every score worker")
    return [owned[g] for g in sorted(owned)]


def run(ctx: StageContext) -> dict:
    sp = ctx.params.score
    base = ctx.dep("workers")
    files = shard_files(base, len(sp.workers))
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    diag = json.loads(ctx.dep("heads").read_text())  # score_heads' diagnostics
    metrics: dict = dict(diag["metrics"])
    plots = empty_owned(ctx.out("plots"))
    with tracking.stage_run(ctx):
        write_parquet_atomic(ctx.out("scores"), table)
        if diag["head_auroc"] is not None:
            heads = np.array(diag["head_auroc"], dtype=float)  # None (NaN) -> nan
            path = head_heatmap(heads, plots / f"auroc_heads_{sp.diagnostic_split}.png")
            tracking.log_artifact(path, "plots")
        for split in dict.fromkeys((sp.diagnostic_split, sp.report_split)):
            part = table[table.split == split] if split else table.iloc[:0]
            if part.empty or part.label.isna().all():  # AUROC needs labels (real data: none)
                continue
            prefix = "" if split == sp.report_split else f"{split}/"
            labels = part.label.astype("float")
            metrics[f"{prefix}auroc"] = auroc(part.d_vis, labels)
            if sp.counterfactual:
                metrics[f"{prefix}auroc_counterfactual"] = auroc(part.d_cf, labels)
        metrics["n_sentences"] = len(table)
        metrics["n_samples"] = int(table.sample_id.nunique())
        tracking.log_metrics(metrics)
        tracking.log_dict(metrics, "score_metrics.json")
        # the report split's D_vis (no report split, e.g. real data: every scored sentence)
        report = table if sp.report_split is None else table[table.split == sp.report_split]
        if report.empty:  # e.g. score.splits leaves the report split out
            log.warning("score_merge: no %s rows scored; no D_vis histogram", sp.report_split)
        else:
            tracking.log_artifact(score_histogram(report, plots / "d_vis_hist.png"), "plots")
    write_json_atomic(ctx.metrics_path(), metrics)
    n_layers = metrics["n_layers"]
    write_csv_atomic(
        ctx.table_path("layers"),
        [
            {
                "layer": layer,
                "auroc_report": metrics.get(f"auroc_layer_{layer}"),
                "auroc_dev": metrics.get(f"{sp.diagnostic_split}/auroc_layer_{layer}"),
            }
            for layer in range(n_layers)
        ],
        columns=["layer", "auroc_dev", "auroc_report"],
    )
    log.info("score_merge: %s", {k: v for k, v in metrics.items() if "layer_" not in k})
    return metrics
