"""Does a study's difference need the caption bias? Merges study.json files made by separate
`mmrpt study` runs (e.g. bias 0.6 in one session, the bias-0 control in another, same code
and arms) and prints the change of every comparison from bias 0 to each bias value
(mmrpt.report.study.bias_effect: difference at the bias minus at bias 0, normal 95% interval
from the two bootstrap standard errors, MDE, verdict). A study run with both values writes
the same table itself (metrics/study.json "bias_effect", report.md).

    python docs/experiments/bias_control.py a/study.json b/study.json [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.report.study import bias_effect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    merged: dict = {}
    for path in args.studies:
        for bias, summary in json.loads(path.read_text())["study"].items():
            if bias in merged:
                raise SystemExit(f"caption bias {bias} appears twice ({path})")
            merged[bias] = summary
    effects = bias_effect(merged)
    if not effects:
        raise SystemExit(f"no bias-0 study among {sorted(merged)}: nothing to compare against")
    for key, per_pair in effects.items():
        for pair, per_metric in per_pair.items():
            for metric, d in per_metric.items():
                print(
                    f"{key:>8}  {pair:<22} {metric:<13} at bias {d['at_bias']:+.3f}  at 0 "
                    f"{d['at_0']:+.3f}  change {d['diff']:+.3f} [{d['lo']:+.3f}, "
                    f"{d['hi']:+.3f}]  {d['verdict']}"
                )
    if args.json:
        args.json.write_text(json.dumps(effects, indent=1) + "\n")


if __name__ == "__main__":
    main()
