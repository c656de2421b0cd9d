"""Where did each arm move from its start? Scores a model folder (the primer every arm starts
from, by default) on a study workspace's prior-conflict colour probes in the zero-shot
fill-in form, exactly as the eval stage does (mmrpt.evaluation.probe_outcomes, the workspace's
params), and pairs it with each arm's zero-shot outcomes (eval/outcomes/<arm>-<seed>.parquet):
accuracy, prior rate, and the paired difference arm - start with its 95% bootstrap interval.
With ``--from-models`` the arms' zero-shot outcomes are scored here from their rl models
(models/rl/<arm>-<seed>, the model the eval stage scores zero-shot) instead of read from the
eval stage's tables: for seeds run only up to the rl stage (docs/experiments/more_seeds.py).

    python docs/experiments/start_point.py studies/cpu_hm/bias-0.6 [--model models/primer]
        [--from-models [--runs mmrpt-8 masked_sft-8]]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.config import load_params  # noqa: E402
from mmrpt.evaluation.probe_outcomes import outcomes  # noqa: E402
from mmrpt.evaluation.scorer import Scorer  # noqa: E402
from mmrpt.io import read_jsonl  # noqa: E402
from mmrpt.report.stats import paired_difference  # noqa: E402
from mmrpt.stages.eval import probe_splits  # noqa: E402


def arm_outcomes(ws: Path, args, probes: list[dict], root: Path, p):
    """(run, its zero-shot fill-in outcomes) for each arm run of the workspace."""
    if not args.from_models:
        for table in sorted((ws / "eval" / "outcomes").glob("*.parquet")):
            arm = pd.read_parquet(table)
            yield table.stem, arm[(arm.phase == "zero_shot") & (arm.form == "fillin")]
        return
    folders = sorted(d for d in (ws / "models" / "rl").iterdir() if d.is_dir())
    if args.runs:
        missing = set(args.runs) - {d.name for d in folders}
        if missing:
            raise SystemExit(f"no rl model for {sorted(missing)} in {ws / 'models' / 'rl'}")
        folders = [d for d in folders if d.name in args.runs]
    for d in folders:
        scorer = Scorer.load(d)
        yield d.name, outcomes(scorer, probes, root, "fillin", p.mask.instruction, p.mask.think)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--model", default="models/primer", help="relative to the workspace")
    ap.add_argument("--from-models", action="store_true", help="score models/rl/* here")
    ap.add_argument("--runs", nargs="*", help="with --from-models: these <arm>-<seed> only")
    args = ap.parse_args()
    ws = args.workspace
    p = load_params(ws / "params.yaml")
    root = ws / p.data.out_dir
    probes = [
        q
        for split in probe_splits(root, p.eval.splits)
        for q in read_jsonl(root / "probes" / f"{split}.jsonl")
        if q["conflict"] and q["type"] == "colour"
    ]
    scorer = Scorer.load(ws / args.model)
    start = outcomes(scorer, probes, root, "fillin", p.mask.instruction, p.mask.think)
    out = {
        "workspace": str(ws),
        "model": args.model,
        "items": len(start),
        "accuracy": round(float(start.correct.mean()), 3),
        "prior_rate": round(float(start.picked_prior.mean()), 3),
        "arms": {},
    }
    for run, arm in arm_outcomes(ws, args, probes, root, p):
        arm = arm.set_index("id").loc[start.id]  # the same probes, in the same order
        diff = paired_difference(arm.correct.to_numpy(float), start.correct.to_numpy(float))
        out["arms"][run] = {
            "accuracy": round(float(arm.correct.mean()), 3),
            "prior_rate": round(float(arm.picked_prior.mean()), 3),
            "minus_start": {k: round(v, 3) for k, v in diff.items() if k in ("diff", "lo", "hi")},
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
