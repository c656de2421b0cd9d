"""Start-up cost of a stage process: the wall time of `python -c "import mmrpt.cli,
mmrpt.stages.<stage>"` (what a stage process imports before it does any work) plus the
process-group calls every stage run makes around its work (mmrpt.stagerun's broadcast, the
CLI's barrier and finish: before f6b161b they imported torch.distributed, so data, mask and
report paid torch's import there), in fresh subprocesses, at HEAD and at ``--ref`` (a
temporary git worktree), interleaved so that both see the same machine; the median of
``--rounds`` per stage and the ratio HEAD / ref.

    python bench/stage_imports.py --ref 60548b0 [--rounds 3] [--stages data mask report]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["data", "mask", "score_merge", "report", "warmup", "rl", "sft", "eval"]


def wall(tree: Path, stage: str) -> float:
    code = (
        f"import mmrpt.cli, mmrpt.stages.{stage}; from mmrpt import distributed as d; "
        "d.broadcast(''); d.barrier(); d.finish()"
    )
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        check=True,
        env={"PYTHONPATH": str(tree), "PATH": ""},
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stages", nargs="+", default=STAGES)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmrpt-imports-") as tmp:
        old = Path(tmp) / "ref"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(old), args.ref], cwd=ROOT, check=True
        )
        try:
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                for stage in args.stages:
                    trees = [("ref", old), ("HEAD", ROOT)]
                    for name, tree in trees if r % 2 == 0 else trees[::-1]:
                        times.setdefault((stage, name), []).append(wall(tree, stage))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=True)
    print(f"| stage | {args.ref} s | HEAD s | HEAD / ref |")
    print("|---|---|---|---|")
    for stage in args.stages:
        a = statistics.median(times[(stage, "ref")])
        b = statistics.median(times[(stage, "HEAD")])
        print(f"| {stage} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
