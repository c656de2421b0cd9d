"""Where a study's wall time went, from the log of `python -m mmrpt study` (or
docs/experiments/run_study_cpu.sh): per caption-bias value the wall time of the upstream chain
(data to primer, alone on the machine) and of the arms (rl, sft, eval per run, max_parallel at a
time), the stage-seconds per kind, how full the slots were, and what one more seed or one more
arm would add at the same per-run times (the arms' stage-seconds / slots, the slots taken as
full). Reads the flow's "<stage>: ran in N s" and "caption bias B: pipeline done (N s)" lines:
stages found up to date (a resumed study) are not counted, so there the upstream reads 0 s and
the arms' wall includes the up-to-date checks; the first bias value's wall starts at the log's
first line (workspace set-up included).

    python docs/experiments/study_times.py study.log [--slots 2] [--out times.json]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

UPSTREAM = ("data", "warmup", "score_heads", "score", "score_merge", "mask", "primer")
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"


def parse(lines: list[str]) -> list[dict]:
    """One dict per bias value: {bias, wall_s, stages: {stage: s}, start, end}."""
    biases, current, start = [], {}, None
    for line in lines:
        t = re.match(STAMP, line)
        now = datetime.fromisoformat(t[1]) if t else None
        if start is None and now:
            start = now
        if m := re.search(r"prefect\.task_runs: (\S+): ran in (\d+) s", line):
            current[m[1]] = {"s": float(m[2]), "end": now}
        elif m := re.search(r"caption bias (\S+): pipeline done \((\d+) s\)", line):
            biases.append({"bias": float(m[1]), "stages": current, "end": now})
            current = {}
    if current:  # a bias value still running (or the log cut): up to the last stage
        biases.append({"bias": None, "stages": current, "end": now_last(lines)})
    for b, prev in zip(biases, [start] + [b["end"] for b in biases], strict=False):
        b["wall_s"] = (b["end"] - prev).total_seconds()
        b["start"] = prev
    return biases


def now_last(lines: list[str]) -> datetime:
    return datetime.fromisoformat(next(t[1] for x in reversed(lines) if (t := re.match(STAMP, x))))


def summarise(b: dict, slots: int) -> dict:
    stages = b["stages"]
    up = {s: v for s, v in stages.items() if s.partition("@")[0] in UPSTREAM}
    arms = {s: v for s, v in stages.items() if s not in up and s != "report"}
    up_end = max(v["end"] for v in up.values()) if up else b["start"]
    kinds: dict[str, list[float]] = defaultdict(list)
    runs: set[str] = set()
    for s, v in arms.items():
        name, _, run = s.partition("@")
        arm = run.rsplit("-", 1)[0]
        kinds[f"{name}/{arm}"].append(v["s"])
        runs.add(run)
    arm_wall = (b["end"] - up_end).total_seconds()
    arm_stage_s = sum(v["s"] for v in arms.values())
    per_arm: dict[str, float] = defaultdict(float)  # one seed of each arm: rl + sft + eval means
    for k, xs in kinds.items():
        per_arm[k.split("/")[1]] += sum(xs) / len(xs)
    return {
        "bias": b["bias"],
        "wall_s": round(b["wall_s"]),
        "upstream_wall_s": round((up_end - b["start"]).total_seconds()),
        "upstream_stages_s": {s: v["s"] for s, v in up.items()},
        "arms_wall_s": round(arm_wall),
        "arms_stage_s": round(arm_stage_s),
        "slot_use": round(arm_stage_s / (slots * arm_wall), 3) if arm_wall > 0 else None,
        "runs": len(runs),
        "per_kind_mean_s": {k: round(sum(x) / len(x)) for k, x in sorted(kinds.items())},
        "per_kind_n": {k: len(x) for k, x in sorted(kinds.items())},
        # what one more seed of every arm adds, and one seed of each arm, at full slots
        "one_more_seed_s": round(sum(per_arm.values()) / slots),
        "one_seed_of_arm_s": {a: round(v / slots) for a, v in sorted(per_arm.items())},
        "report_s": stages.get("report", {}).get("s"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--slots", type=int, default=2, help="the study's --max-parallel")
    ap.add_argument("--out")
    args = ap.parse_args()
    lines = Path(args.log).read_text(errors="replace").splitlines()
    parts = parse(lines)
    res = {
        "log": args.log,
        "slots": args.slots,
        "biases": [summarise(b, args.slots) for b in parts],
    }
    if parts:
        res["logged_s"] = round((now_last(lines) - parts[0]["start"]).total_seconds())
    if m := re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", "\n".join(lines)):
        res["time_v_elapsed"] = m[1]
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
