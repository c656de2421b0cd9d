"""All benchmarks in one run, one table of ratios, each against a baseline measured in the same
run (the main job against its 15-minute bar). The machine may be shared: every benchmark
interleaves baseline and ours (ABAB) so that load from other jobs hits both alike.

    python bench/run_all.py                    # scoring + rl (~3 minutes on 2 quiet cores)
    python bench/run_all.py --main-job         # + the whole embedded main job (~15 minutes)
    python bench/run_all.py --main-job --params-file small.yaml -S rl.steps=2   # reduced
    python bench/run_all.py --json results.json

Components: score_bench.run (D_vis path vs naive eager attention), rl_bench.run (our rl
trainer vs bare TRL GRPOTrainer), main_job.run (the main job as `make main` runs it, in a fresh copy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import main_job  # noqa: E402
import rl_bench  # noqa: E402
import score_bench  # noqa: E402


def rows(results: dict) -> list[tuple]:
    """(bench, metric, baseline name, baseline, ours, ratio name, ratio, target, ok)."""
    out = []
    if s := results.get("score"):
        n, o = s["naive"], s["ours"]
        out += [
            (
                "score",
                "samples/s",
                "naive eager",
                n["samples_per_s"],
                o["samples_per_s"],
                "ours/naive",
                s["speed_ratio"],
                ">= 3x",
                s["speed_ratio"] >= 3,
            ),
            (
                "score",
                "peak extra MB",
                "naive eager",
                n["peak_extra_mb"],
                o["peak_extra_mb"],
                "naive/ours",
                s["memory_ratio"],
                ">= 3x",
                s["memory_ratio"] >= 3,
            ),
        ]
    if r := results.get("rl"):
        b, o = r["bare"], r["ours"]
        for key, metric in (
            ("s_per_step", "s/step"),
            ("generation_s", "generation s/step"),
            ("update_s", "update s/step"),
            ("reward_s", "reward s/step"),
        ):
            ratio = o[key] / b[key] if b[key] else float("inf")
            target, ok = ("<= 1.10", ratio <= 1.10) if key == "s_per_step" else ("", None)
            out.append(("rl", metric, "bare TRL", b[key], o[key], "ours/bare", ratio, target, ok))
        out.append(
            (
                "rl",
                "tokens/s",
                "bare TRL",
                b["tokens_per_s"],
                o["tokens_per_s"],
                "ours/bare",
                r["tokens_ratio"],
                ">= 0.91",
                r["tokens_ratio"] >= 1 / 1.1,
            )
        )
    if m := results.get("main_job"):
        out += [
            (
                "main job",
                "wall s",
                "bar",
                900.0,
                m["wall_s"],
                "ours/bar",
                m["wall_s"] / 900,
                "<= 1",
                m["wall_s"] <= 900,
            ),
            (
                "main job",
                "peak tree MB",
                "",
                float("nan"),
                m["peak_tree_mb"],
                "",
                float("nan"),
                "",
                None,
            ),
        ]
    return out


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def table(results: dict) -> str:
    head = (
        f"{'bench':<9}{'metric':<19}{'baseline':<12}{'base':>9}{'ours':>9}  "
        f"{'ratio':<11}{'':>7}  {'target':<8}ok"
    )
    lines = [head, "-" * len(head)]
    for bench, metric, bname, base, ours, rname, ratio, target, ok in rows(results):
        mark = "" if ok is None else ("yes" if ok else "NO")
        lines.append(
            f"{bench:<9}{metric:<19}{bname:<12}{fmt(base):>9}{fmt(ours):>9}  "
            f"{rname:<11}{'-' if ratio != ratio else f'{ratio:.3f}':>7}  "
            f"{target:<8}{mark}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--main-job",
        action="store_true",
        help="also time the main job as make main runs it (~16 min)",
    )
    ap.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for the main-job copy (repeatable)",
    )
    ap.add_argument(
        "--params-file",
        help="YAML of params sections merged into the main-job "
        "copy's params.yaml (a reduced job for a quick check)",
    )
    ap.add_argument("--skip", action="append", default=[], choices=["score", "rl"])
    ap.add_argument("--score-rounds", type=int, default=2)
    ap.add_argument("--rl-steps", type=int, default=10)
    ap.add_argument("--rl-warmup", type=int, default=2)
    ap.add_argument("--rl-threads", type=int, default=1)
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args()
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    if "score" not in args.skip:
        results["score"] = score_bench.run(rounds=args.score_rounds)
        print(f"score done: {results['score']['speed_ratio']:.2f}x", flush=True)
    if "rl" not in args.skip:
        results["rl"] = rl_bench.run(
            steps=args.rl_steps, warmup=args.rl_warmup, threads=args.rl_threads
        )
        print(rl_bench.report(results["rl"]), flush=True)
    if args.main_job:
        files = main_job.file_overrides(args.params_file) if args.params_file else []
        results["main_job"] = main_job.run(files + args.overrides)
        print(main_job.report(results["main_job"]), flush=True)
    print(f"\n{results['date']}, {results['machine']}")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
