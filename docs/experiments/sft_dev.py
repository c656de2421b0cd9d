"""SFT length on the dev split: accuracy in question form after each SFT budget (the budgets'
snapshots and the final model, from eval/outcomes/<run>.parquet of a workspace whose eval ran
with ``eval.splits: [dev]``), beside the prior-only and constant answerers on the same probes
(mmrpt.report.study.references). The study's bar asks every arm to sit >= 20 points above the
prior-only answerer on iid probes after SFT; dev (train-like, prior-following scenes) is
where the SFT length is chosen, never test_iid.

    python docs/experiments/sft_dev.py /work/sftdev masked_sft-4 mmrpt-4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.report.study import references  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--split", default="dev")
    args = ap.parse_args()
    out: dict[str, dict] = {}
    for run in args.runs:
        t = pd.read_parquet(args.workspace / "eval" / "outcomes" / f"{run}.parquet")
        t = t[(t.split == args.split) & (t.form == "question")]
        if t.empty:
            raise SystemExit(f"{run}: no {args.split} question-form outcomes")
        rows = {}
        for (phase, steps), part in t.groupby(["phase", "steps"]):
            acc = float(part.correct.mean())
            ref = references(part)
            rows[f"{phase}@{steps}"] = {
                "items": len(part),
                "accuracy": round(acc, 3),
                "se": round(float(np.sqrt(acc * (1 - acc) / len(part))), 3),
                "prior_only": round(ref["prior_only"], 3),
                "constant": round(ref["constant"], 3),
                "above_prior_only": round(acc - ref["prior_only"], 3),
                "by_type": {
                    k: round(float(v), 3) for k, v in part.groupby("type").correct.mean().items()
                },
            }
        out[run] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
