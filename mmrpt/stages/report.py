"""Stage `report`: one comparison of arms x benchmarks x (zero-shot, after SFT), mean and
spread over the replicate seeds (`seeds`): reports/report.md, CSVs, plots;
metrics/report.json and metrics/rl.json (held-out masked-span exact match per arm); logged to
MLflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mmrpt import tracking
from mmrpt.contract import StageContext
from mmrpt.io import write_csv_atomic, write_json_atomic
from mmrpt.report.arms import write_report

log = logging.getLogger(__name__)


def collect_rl_metrics(rl_dir: Path, primer: Path, arms: list[str], seeds: list[int]) -> dict:
    """{arm: {"exact_match": mean over seeds, ..., "seeds": {seed: ...}}} over the runs of
    ``arms`` x ``seeds``, plus the warmup and primer baselines."""
    out: dict = {}
    if primer.exists():
        p = json.loads(primer.read_text())
        out["warmup_exact_match"] = p.get("warmup_exact_match")
        out["primer_exact_match"] = p.get("primer_exact_match")
    for arm in arms:
        mine = {
            s: json.loads((rl_dir / f"{arm}-{s}.json").read_text())
            for s in seeds
            if (rl_dir / f"{arm}-{s}.json").exists()
        }
        if not mine:
            continue
        keys = [
            k
            for k, v in next(iter(mine.values())).items()
            if k.startswith("exact_match") and isinstance(v, float)
        ]
        out[arm] = {k: sum(r[k] for r in mine.values()) / len(mine) for k in keys}
        out[arm]["seeds"] = {str(s): {k: r[k] for k in keys} for s, r in sorted(mine.items())}
    return out


def run(ctx: StageContext) -> dict:
    p = ctx.params
    out = ctx.out("report")
    arms = list(p.arms)
    with tracking.stage_run(ctx):
        report, summary = write_report(
            ctx.dep("eval"), ctx.dep("curves"), out, seeds=p.seeds, arms=arms
        )
        # the chart dvc plots shows: counter-prior accuracy per arm and phase (a few bars)
        shown = {"lmeval/counter/acc": "caption form", "vlmeval/counter/acc": "question form"}
        rows = [
            {
                "label": f"{r.arm}, {r.phase.replace('_', '-')}, {shown[r.metric]}",
                "arm": r.arm,
                "phase": r.phase,
                "metric": r.metric,
                "mean": r.mean,
            }
            for r in summary.itertuples()
            if r.metric in shown
        ]
        write_csv_atomic(
            ctx.table_path("accuracy"), rows, columns=["label", "arm", "phase", "metric", "mean"]
        )
        tracking.log_metrics(
            {f"{r.phase}/{r.metric}/{r.arm}": r.mean for r in summary.itertuples()}
        )
        for f in sorted(out.iterdir()):
            tracking.log_artifact(f, "report")
        rl = collect_rl_metrics(ctx.dep("rl"), ctx.dep("primer"), arms, list(p.seeds))
    write_json_atomic(ctx.metrics_path("rl"), rl)
    write_json_atomic(ctx.metrics_path(), report)
    log.info("report written to %s", out / "report.md")
    return dict(report["claims"])
