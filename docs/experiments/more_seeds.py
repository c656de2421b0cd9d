"""More seeds for the study's primary metric (issue 17): a copy of a finished study workspace
(its data, warmup, scores, masks and primer are DVC outputs there, up to date) with other
``seeds``, reproduced up to the rl stage only, through the pipeline flow (flows/pipeline.py:
`dvc repro --single-item` per stage, ``--max-parallel`` at a time, one thread each). Every
stage upstream of rl is up to date in the copy, so only the new arm runs train; the stage
code is the workspace's own copy (the code its earlier seeds ran). The copy leaves out the
source's MLflow store (a fresh one is made in the copy).

The primary metric (prior-conflict colour accuracy, zero-shot) of the new runs is then scored
from their rl models by docs/experiments/start_point.py --from-models, and
docs/experiments/seed_level.py pairs the arms over all seeds. SFT and the eval stage are not
run for these seeds.

Without a finished workspace (a fresh machine), ``--build BIAS`` makes DEST from this
checkout the way the study made the source (flows.study.workspace_params: profiles/study.yaml,
the two arms of the seeds-0-19 runs, no SFT budgets, this caption bias) and the same flow
reproduces data, warmup, scores, masks and primer first, one thread per stage process as in
the study (``--max-parallel`` > 1). The upstream stage code is unchanged since ed00c57, so on
the same kind of CPU it gives the same primer: check with start_point.py (primer 0.433, prior
rate 0.265 on 2,841 items for bias 0.6; an AVX-512 CPU gave 0.419 / 0.269, docs/LOG.md).

    python docs/experiments/more_seeds.py SRC_WORKSPACE DEST_WORKSPACE --seeds 8 9 10
    python docs/experiments/more_seeds.py --build 0.6 DEST_WORKSPACE --seeds 20 21 22 23
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# the arms of seeds 0-19 at bias 0.6 (results/study_cpu_hm_*, seeds_b06_ed00c57)
ARMS = (
    "arms={masked_sft: {objective: sft}, "
    "mmrpt: {objective: grpo, reward_weights: {format: 0.2, visual: 1.0}}}"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path, nargs="?", help="a study workspace that has run")
    ap.add_argument("dest", type=Path, help="the copy (made if missing, reused if present)")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--max-parallel", type=int, default=2)
    ap.add_argument("--build", type=float, metavar="BIAS", help="no source: make it here")
    args = ap.parse_args()
    # an existing dest is reused: its upstream stages are up to date, only new arms run
    if not args.dest.exists() and args.build is not None:
        from flows.study import workspace_params
        from mmrpt.workspace import checkout_copy

        params = workspace_params(
            ROOT, ROOT / "profiles/study.yaml", args.build, [ARMS, "sft.budgets=[]"]
        )
        checkout_copy(ROOT, args.dest, params)
    elif not args.dest.exists():
        if args.source is None or not (args.source / "dvc.lock").exists():
            raise SystemExit(f"{args.source}: not a DVC workspace that has run (or --build BIAS)")
        shutil.copytree(
            args.source, args.dest, symlinks=True, ignore=shutil.ignore_patterns("mlruns")
        )
    if args.max_parallel > 1:  # stage processes share the cores: one thread each
        os.environ["OMP_NUM_THREADS"] = "1"
    from flows.pipeline import pipeline

    t0 = time.time()
    pipeline(
        stages=["rl"],
        workdir=str(args.dest),
        max_parallel=args.max_parallel,
        overrides={"seeds": args.seeds},
    )
    print(f"rl for seeds {args.seeds} done in {time.time() - t0:.0f} s: {args.dest}")


if __name__ == "__main__":
    main()
