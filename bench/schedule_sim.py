"""How much the order of the arms' stages matters with N slots: list scheduling of the main
job's arms (rl -> sft -> eval per arm and seed, all after the primer) on its measured stage
times (a bench/main_job.py JSON), with the flow's order (a free slot to the waiting stage with
the longest chain ahead: flows.pipeline.critical_path) against random orders (what a
semaphore gives: whichever waiting thread wakes first). Times are taken as fixed, so this
isolates the order; it measures nothing on the machine.

    python bench/schedule_sim.py docs/experiments/results/main_job_flow2_f97f5a8_2026-12-04.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.pipeline import critical_path  # noqa: E402


def arms_graph(times: dict[str, float]) -> tuple[list[str], dict[str, list[str]]]:
    """The arms' stages in topological order and each one's upstream stages."""
    runs = sorted({s.partition("@")[2] for s in times if s.startswith("rl@")})
    order = [f"{s}@{r}" for s in ("rl", "sft", "eval") for r in runs]
    upstream = {f"rl@{r}": [] for r in runs}
    upstream |= {f"sft@{r}": [f"rl@{r}"] for r in runs}
    upstream |= {f"eval@{r}": [f"sft@{r}"] for r in runs}
    return order, upstream


def makespan(order, upstream, times, slots: int, key) -> float:
    """Event-driven list scheduling: whenever a slot is free, the ready stage first in
    ``key`` order starts."""
    done: dict[str, float] = {}
    running: list[tuple[float, str]] = []
    started: set[str] = set()
    now = 0.0
    while len(done) < len(order):
        ready = [s for s in order if s not in started and all(u in done for u in upstream[s])]
        for s in sorted(ready, key=key)[: slots - len(running)]:
            started.add(s)
            heapq.heappush(running, (now + times[s], s))
        now, s = heapq.heappop(running)
        done[s] = now
    return now


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result", help="a bench/main_job.py --json file")
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args()
    times = json.loads(Path(args.result).read_text())["stages_s"]
    order, upstream = arms_graph(times)
    rest = critical_path(order, upstream, {s: times[s] for s in order})
    flow = makespan(order, upstream, times, args.slots, key=lambda s: -rest[s])
    rng = random.Random(0)
    draws = [
        makespan(order, upstream, times, args.slots, key=lambda s: rng.random())
        for _ in range(args.draws)
    ]
    total = sum(times[s] for s in order)
    print(f"arms: {len(order)} stages, {total:.0f} s of work on {args.slots} slots")
    print(f"critical path first (the flow): {flow:.0f} s")
    print(
        f"random order ({args.draws} draws): mean {statistics.mean(draws):.0f} s, "
        f"median {statistics.median(draws):.0f} s, best {min(draws):.0f} s, worst {max(draws):.0f} s"
    )


if __name__ == "__main__":
    main()
