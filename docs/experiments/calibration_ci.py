"""Differences between the calibration's models (docs/experiments/bias_calibration.py output)
with 95% confidence intervals and the minimum detectable effect.

The calibration keeps accuracies only, not per-item outcomes, so the intervals are the
unpaired Wald ones: wider than the paired interval the study computes from its per-probe
tables (same items for every model; positively correlated outcomes narrow a paired CI).
MDE: the smallest difference a two-sided 5% test detects with 80% power at these rates.

    python docs/experiments/calibration_ci.py docs/experiments/results/bias_calibration_0.6.json
"""

from __future__ import annotations

import json
import math
import sys
from itertools import combinations

Z, Z_POWER = 1.959964, 0.841621


def main(path: str) -> None:
    result = json.loads(open(path, encoding="utf-8").read())
    models = [m for m in ("primer", "masked_sft", "grpo_exact", "grpo_visual") if m in result]
    for split in ("test_counter", "test_iid"):
        print(f"\n{split}: accuracy of the colour word (n per model)")
        for m in models:
            r = result[m][split]
            print(f"  {m:12s} {r['accuracy']:.3f}  prior {r['prior_rate']:.3f}  (n {r['n']})")
        print("  difference b - a, 95% CI (unpaired Wald), MDE (80% power)")
        for a, b in combinations(models, 2):
            ra, rb = result[a][split], result[b][split]
            pa, pb = ra["accuracy"], rb["accuracy"]
            se = math.sqrt(pa * (1 - pa) / ra["n"] + pb * (1 - pb) / rb["n"])
            d = pb - pa
            print(
                f"  {b:12s} - {a:12s} {d:+.3f} [{d - Z * se:+.3f}, {d + Z * se:+.3f}]"
                f"  MDE {(Z + Z_POWER) * se:.3f}"
            )


if __name__ == "__main__":
    main(sys.argv[1])
