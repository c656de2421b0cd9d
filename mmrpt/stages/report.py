"""Stage `report`: one comparison of arms x benchmarks x (zero-shot, after SFT), mean and
spread over the replicate seeds (`seeds`): reports/report.md, CSVs, plots;
metrics/report.json; logged to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.report.arms import write_report
from mmrpt.stages.common import METRICS_DIR, PLOTS_DIR, write_csv_atomic, write_metrics

log = logging.getLogger(__name__)


def run(params: Params) -> dict:
    out = Path(params.report.out_dir)
    with tracking.stage_run("report", params):
        report, summary = write_report(METRICS_DIR / "eval", PLOTS_DIR / "rl", out,
                                       seeds=params.seeds)
        rows = [{"label": f"{r.arm} {r.phase} {r.metric}", "arm": r.arm, "phase": r.phase,
                 "metric": r.metric, "mean": r.mean} for r in summary.itertuples()
                if r.metric.endswith("/acc") and r.metric.count("/") == 2]
        write_csv_atomic(PLOTS_DIR / "report_accuracy.csv", rows)
        tracking.log_metrics({f"{r.phase}/{r.metric}/{r.arm}": r.mean
                              for r in summary.itertuples()})
        for f in sorted(out.iterdir()):
            tracking.log_artifact(f, "report")
    write_metrics("report", report)
    log.info("report:\n%s", (out / "report.md").read_text())
    return dict(report["claims"])
