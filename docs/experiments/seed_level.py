"""Seed-level comparison of two arms across study runs: each (arm, seed)'s accuracy from the
start_point.json files of docs/experiments/start_point.py (the primary metric's items, the same
in every run of one bias value), the per-seed paired difference a - b, its mean with a t
interval over seeds, the sign test, the MDE at this many seeds, and the seeds an MDE of
``--target`` would need. With few seeds a cluster bootstrap understates the seed variance;
this is the conservative view. Each arm's prior rate per seed (the share of the items where
it picks the language prior's colour) is listed beside its accuracy. Beside the t interval, a
percentile bootstrap over the seeds (10,000 resamples of the per-seed differences): the
differences are skewed (imitation sometimes copies the bias strongly), and the t interval
assumes a normal mean.

    python docs/experiments/seed_level.py sp1.json sp2.json [--a mmrpt --b masked_sft]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.report.stats import seed_level  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("start_points", nargs="+", type=Path)
    ap.add_argument("--a", default="mmrpt")
    ap.add_argument("--b", default="masked_sft")
    ap.add_argument("--target", type=float, default=0.05)
    args = ap.parse_args()
    acc: dict[str, dict[int, float]] = {args.a: {}, args.b: {}}
    prior: dict[str, dict[int, float]] = {args.a: {}, args.b: {}}
    for path in args.start_points:
        for run, r in json.loads(path.read_text())["arms"].items():
            arm, seed = run.rsplit("-", 1)
            if arm in acc:
                if int(seed) in acc[arm]:
                    raise SystemExit(f"{run} appears twice ({path})")
                acc[arm][int(seed)] = r["accuracy"]
                prior[arm][int(seed)] = r["prior_rate"]
    seeds = sorted(set(acc[args.a]) & set(acc[args.b]))
    if len(seeds) < 2:
        raise SystemExit(f"need >= 2 seeds with both arms, got {seeds}")
    d = np.array([acc[args.a][s] - acc[args.b][s] for s in seeds])
    lvl = seed_level(d, target=args.target)  # what the study's report computes, per comparison
    out = {
        "seeds": seeds,
        args.a: [acc[args.a][s] for s in seeds],
        args.b: [acc[args.b][s] for s in seeds],
        f"{args.a}_prior_rate": [prior[args.a][s] for s in seeds],
        f"{args.b}_prior_rate": [prior[args.b][s] for s in seeds],
        "diff_per_seed": [round(float(x), 4) for x in d],
        "diff": lvl["diff"],
        "lo": lvl["lo"],
        "hi": lvl["hi"],
        "seed_boot_lo": lvl["boot_lo"],
        "seed_boot_hi": lvl["boot_hi"],
        "sign_test_p": lvl["sign_test_p"],
        "mde": lvl["mde"],
        "seeds_for_target_mde": lvl["seeds_for_target"],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
