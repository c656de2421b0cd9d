"""Issue 14's "behaviour unchanged" check: the metrics of two main-job copies (bench/main_job.py
--keep), file by file and key by key.

Both copies run the same params (e.g. tests/tiny_params.py's sizes, --params-file) from
different commits; every metrics file either copy has is compared (JSON numbers to 1e-9
relative); the output lists equal files, and per differing file the keys that differ or exist
on one side only.

    python bench/main_job.py --ref 6e8e3b0 --params-file tiny.yaml --keep   # before
    python bench/main_job.py --ref 56f784e --params-file tiny.yaml --keep   # after
    python docs/experiments/compare_main_jobs.py <before copy> <after copy>
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out |= flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: obj}


def same(a, b) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def main(before: str, after: str) -> None:
    a_root, b_root = Path(before) / "metrics", Path(after) / "metrics"
    names = sorted(
        {p.relative_to(a_root) for p in a_root.rglob("*.json")}
        | {p.relative_to(b_root) for p in b_root.rglob("*.json")}
    )
    for name in names:
        pa, pb = a_root / name, b_root / name
        if not pa.exists() or not pb.exists():
            print(f"{name}: only {'after' if pb.exists() else 'before'}")
            continue
        fa, fb = flat(json.loads(pa.read_text())), flat(json.loads(pb.read_text()))
        diff = [k for k in sorted(fa.keys() & fb.keys()) if not same(fa[k], fb[k])]
        only = sorted(fa.keys() ^ fb.keys())
        if not diff and not only:
            print(f"{name}: equal ({len(fa)} values)")
            continue
        print(f"{name}: {len(diff)} of {len(fa.keys() & fb.keys())} values differ")
        for k in diff[:12]:
            print(f"    {k}: {fa[k]!r} -> {fb[k]!r}")
        for k in only[:12]:
            print(f"    {k}: only {'after' if k in fb else 'before'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
