"""Prefect flow over the DVC pipeline: orchestration only, no ML logic and no second graph.

The graph is DVC's (dvc.yaml, generated from mmrpt/pipeline.py): the flow reads it from the
DVC project in ``workdir`` and runs one Prefect task per DVC stage (matrix items included,
``rl@mmrpt-0``), each as ``dvc repro --single-item <stage>``. So DVC decides what is up to
date, runs the stage's command and records it in dvc.lock: after a flow run ``dvc status``
says the pipeline is up to date, exactly as after ``dvc repro``. A task waits for the tasks of
the stages it depends on; stages that do not depend on each other (the arms x seeds) run
concurrently, up to ``max_parallel`` at a time (DVC releases its lock while a stage command
runs); a free slot goes to the ready stage with the longest expected chain still ahead of
it (the main job's measured stage times), so the two long GRPO arms start first; each flow
run has its own slots. Stages that may run beside another get the cores split between them
as torch/OpenMP threads (unless OMP_NUM_THREADS is set); a stage that always runs alone keeps them all.
Overrides are written into the workdir's params.yaml first (as ``dvc exp run -S``
does), after validation by the same schema, so DVC sees them as params changes; a
``params_file`` (e.g. a real-data profile) replaces params.yaml before that. How many
processes a training stage or score worker runs is a param (``num_processes`` sets
launch.num_processes; `python -m mmrpt` then starts them under torchrun), and
``score_workers`` splits scoring over that many DVC stages (score@0..W-1), which run
concurrently up to ``max_parallel``.

Failures: a stage that exits 2 (bad params or input: fails the same way every time) fails its
task at once; anything else (a killed worker, OOM, I/O) is retried twice. Each stage task
publishes an artifact with its headline metrics and the link to its MLflow run. One flow run
is one MLflow parent run; the stage runs nest under it ($MMRPT_PARENT_RUN_ID).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.runtime import flow_run

from mmrpt import tracking
from mmrpt.config import ParamsError, load_params

BAD_INPUT_EXIT = 2  # what `python -m mmrpt` returns for bad params or input


class StageFailed(RuntimeError):
    def __init__(self, stage: str, code: int, tail: str):
        super().__init__(f"stage {stage} failed (exit {code}):\n{tail}")
        self.stage, self.code = stage, code


def may_pass_on_retry(task, task_run, state) -> bool:
    """Prefect's retry condition: bad params or input fail the same way every time."""
    try:
        state.result()
    except StageFailed as e:
        return e.code != BAD_INPUT_EXIT
    except (ValueError, FileNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - everything else (killed worker, OOM, I/O) may pass
        return True
    return True


def dvc_graph(workdir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The DVC stages of ``workdir`` in topological order, and each one's upstream stages."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        graph = repo.index.graph  # edges: stage -> the stages it depends on
        order = list(reversed(list(nx.topological_sort(graph))))
        names = {s: s.name for s in graph.nodes}  # "rl@mmrpt-0", as `dvc repro` takes it
        return (
            [names[s] for s in order],
            {names[s]: [names[d] for d in graph.successors(s)] for s in order},
        )


def select(
    order: list[str], upstream: dict[str, list[str]], targets: list[str] | None
) -> list[str]:
    """The stages ``dvc repro <targets>`` would consider: the targets (a stage name, a matrix
    group such as ``rl``, or one item ``rl@mmrpt-0``) and everything upstream of them."""
    if not targets:
        return order
    unknown = [t for t in targets if not any(s == t or s.startswith(t + "@") for s in order)]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; DVC stages: {', '.join(order)}")
    chosen = {s for s in order for t in targets if s == t or s.startswith(t + "@")}
    todo = list(chosen)
    while todo:
        for dep in upstream[todo.pop()]:
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    return [s for s in order if s in chosen]


def settle_lock(workdir: Path, order: list[str]) -> None:
    """Write dvc.lock's stages in the graph's order. DVC adds a stage's entry when it first
    finishes, so stages run side by side leave them in the order they happened to finish
    (rl@mmrpt-0 and rl@random_mask-0 are seconds apart): the same run could leave another
    dvc.lock byte for byte and `git status` would show it. DVC's own YAML writer, so only the
    order changes."""
    from dvc.utils.serialize import modify_yaml

    lock = workdir / "dvc.lock"
    if not lock.exists():
        return
    rank = {s: i for i, s in enumerate(order)}
    with modify_yaml(lock) as data:
        stages = data.get("stages") or {}
        items = sorted(stages.items(), key=lambda kv: rank.get(kv[0], len(rank)))
        for name, _ in items:
            del stages[name]
        for name, entry in items:
            stages[name] = entry


def use_params_file(work: Path, source: Path) -> None:
    """Make ``source`` the params.yaml of the DVC project in ``work``."""
    if source.resolve() != (work / "params.yaml").resolve():
        (work / "params.yaml").write_text(source.read_text())


def write_overrides(params_file: Path, overrides: dict[str, Any]) -> None:
    """Apply dotted-key overrides to params.yaml in place, keeping its comments."""
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")  # round-trip: safe (plain YAML types only), keeps the comments
    doc = rt.load(params_file.read_text()) or {}
    for key, value in overrides.items():
        node = doc
        *path, leaf = key.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[leaf] = value
    with open(params_file, "w") as f:
        rt.dump(doc, f)


def expected_seconds(stage: str, params) -> float:
    """A stage's time in the measured embedded main job (mmrpt/reference_times.json), used
    only to order the stages that wait for a slot (other params or models scale every stage
    alike often enough for that); 1 s where nothing was measured."""
    from mmrpt.cli import reference_seconds

    name, _, run = stage.partition("@")
    arm = run.rsplit("-", 1)[0]  # rl@mmrpt-0 -> mmrpt; score@0 -> "0", not an arm
    arm = arm if arm in params.arms else None
    return float(reference_seconds(name, params, arm, same_params=False) or 1.0)


def critical_path(
    chosen: list[str], upstream: dict[str, list[str]], cost: dict[str, float]
) -> dict[str, float]:
    """Each stage's expected time to the end of the run: its own cost plus the longest chain
    of stages downstream of it. A free slot goes to the waiting stage with the most: with two
    slots and the main job's arms that is 472 s of arms where a random order takes 505 s on
    average and up to 623 s (the f97f5a8 stage times, bench/schedule_sim.py)."""
    downstream: dict[str, list[str]] = {s: [] for s in chosen}
    for s in chosen:
        for d in upstream[s]:
            if d in downstream:
                downstream[d].append(s)
    rest: dict[str, float] = {}
    for s in reversed(chosen):  # chosen is in topological order
        rest[s] = cost[s] + max((rest[d] for d in downstream[s]), default=0.0)
    return rest


class Slots:
    """At most ``n`` stages of one flow run at a time, and a free slot for the ready stage with
    the highest ``priority`` (its critical path; ties: the earlier in ``upstream``'s order).
    "Ready" is counted here, from the stages this object saw finish, not from which task
    threads have arrived: when the primer ends, its four rl stages become ready at once, and
    the thread that Prefect starts first must not take a slot that a longer chain should have
    (a semaphore, or a queue of the threads that arrived, does exactly that). A ready stage
    whose thread has not arrived within ``patience`` seconds stops holding the others back."""

    def __init__(
        self,
        n: int,
        upstream: dict[str, list[str]] | None = None,
        priority: dict[str, float] | None = None,
        patience: float = 30.0,
    ):
        self.free, self.patience = n, patience
        self.upstream = {s: [d for d in ds if d in upstream] for s, ds in (upstream or {}).items()}
        self.priority = dict(priority or {})
        self.position = {s: i for i, s in enumerate(self.upstream)}
        self.finished: set[str] = set()
        self.holding: set[str] = set()
        self.waiting: set[str] = set()
        self.started: list[str] = []  # the order stages took their slots in
        self.arrived: set[str] = set()  # stages whose threads have asked for a slot
        now = time.monotonic()
        self.ready_since = {s: now for s, ds in self.upstream.items() if not ds}
        self._cond = threading.Condition()

    def _rank(self, stage: str) -> tuple[float, int]:
        return self.priority.get(stage, 0.0), -self.position.get(stage, len(self.position))

    def _ahead(self, stage: str) -> int:
        """How many stages that may still take a slot outrank ``stage``: those waiting, and
        those ready whose threads are on their way (not yet come, within ``patience``; one
        that came and failed counts again only when its retry asks)."""
        now = time.monotonic()
        rivals = self.waiting | {
            s
            for s, t in self.ready_since.items()
            if now - t < self.patience and s not in self.finished | self.arrived
        }
        return sum(self._rank(r) > self._rank(stage) for r in rivals - {stage})

    @contextmanager
    def take(self, stage: str):
        """Hold a slot while ``stage`` runs; the stage counts as finished (its downstream
        stages as ready) if the block exits without an exception."""
        with self._cond:
            self.waiting.add(stage)
            self.arrived.add(stage)
            try:
                while not (self.free > 0 and self._ahead(stage) < self.free):
                    # patience runs out without a notify
                    self._cond.wait(timeout=min(1.0, self.patience))
            finally:  # also if the wait is interrupted: a stale entry would outrank others
                self.waiting.discard(stage)
            self.holding.add(stage)
            self.started.append(stage)
            self.free -= 1
            self._cond.notify_all()  # the next in line may take another free slot
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._cond:
                self.holding.discard(stage)
                self.free += 1
                if ok:
                    self.finished.add(stage)
                    now = time.monotonic()
                    for s, ds in self.upstream.items():
                        if s not in self.ready_since and all(d in self.finished for d in ds):
                            self.ready_since[s] = now
                self._cond.notify_all()


_slots: dict[str, Slots] = {}  # one per flow run, by its id


def concurrent(chosen: list[str], upstream: dict[str, list[str]]) -> set[str]:
    """The stages that may run while another of ``chosen`` runs: those with a stage that is
    neither upstream nor downstream of them (the arms x seeds, the score workers). The others
    (data, warmup, ..., primer, report) always run alone."""
    above: dict[str, set[str]] = {}

    def ancestors(s: str) -> set[str]:
        if s not in above:
            above[s] = {a for d in upstream[s] for a in (d, *ancestors(d))}
        return above[s]

    for s in chosen:
        ancestors(s)
    return {
        s for s in chosen if any(t != s and t not in above[s] and s not in above[t] for t in chosen)
    }


def stage_threads(max_parallel: int, shares_cores: bool) -> int | None:
    """Torch/OpenMP threads for a stage process: the cores split between the stages that may
    run at once, so they do not oversubscribe the CPU (two processes with two threads each on
    two cores stall each other: the warmup ran 30x slower that way, docs/LOG.md). None (the
    library default, all cores) for a stage that runs alone or where the user set
    OMP_NUM_THREADS."""
    if max_parallel == 1 or not shares_cores or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, usable_cores() // max_parallel)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. `taskset` or a container's
    cpuset), which os.cpu_count() (the machine's) ignores."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=may_pass_on_retry)
def repro_stage(
    stage: str,
    workdir: str,
    max_parallel: int = 1,
    threads: int | None = None,
) -> dict:
    """``dvc repro --single-item <stage>`` in ``workdir`` (with ``threads`` torch/OpenMP
    threads, if given) once the flow run's slots (``max_parallel``) let it; returns the
    stage's metrics."""
    logger = get_run_logger()
    slots = _slots.get(flow_run.get_id() or "") or _slots.setdefault(
        f"bare-{max_parallel}", Slots(max_parallel)
    )
    env = os.environ.copy()
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    tail: deque[str] = deque(maxlen=60)  # for the error message
    ran = False
    with slots.take(stage):  # a failure raises inside: the stage does not count as done
        t0 = time.time()
        if stage in slots.priority:
            logger.info(
                "%s: started; ~%.0f s of stages ahead on its chain", stage, slots.priority[stage]
            )
        with subprocess.Popen(
            [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage],
            cwd=workdir,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        ) as proc:
            for line in proc.stdout:  # the stage's own progress, live, as task-run logs
                if line := line.rstrip():
                    logger.info("%s | %s", stage, line)
                    tail.append(line)
                    ran = ran or line.startswith("Running stage")
        out = "\n".join(tail)
        if proc.returncode:
            code = BAD_INPUT_EXIT if f"exited with {BAD_INPUT_EXIT}" in out else proc.returncode
            raise StageFailed(stage, code, out[-3000:])
    logger.info(
        "%s: %s in %.0f s%s",
        stage,
        "ran" if ran else "up to date",
        time.time() - t0,
        f" ({threads} torch threads: the cores shared with stages beside it)" if threads else "",
    )
    metrics = stage_metrics(Path(workdir), stage)
    if ran:
        publish(stage, metrics)
    return metrics


def stage_metrics(workdir: Path, stage: str) -> dict:
    """The stage's metrics file (matrix items: metrics/<stage>/<item>.json, e.g. rl@mmrpt-0's
    metrics/rl/mmrpt-0.json, score@1's metrics/score/1.json)."""
    from mmrpt.pipeline import stage as declared

    name, _, run = stage.partition("@")
    if run:
        path = workdir / "metrics" / name / f"{run}.json"
    else:
        path = workdir / declared(name).metrics.get("metrics", f"metrics/{name}.json")
    return json.loads(path.read_text()) if path.exists() else {}


def publish(stage: str, metrics: dict) -> None:
    parent = os.environ.get(tracking.PARENT_ENV)
    name, _, run = stage.partition("@")
    run_id = tracking.child_run_id(parent, f"{name}/{run}" if run else name) if parent else None
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
    rows = "\n".join(
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in sorted(flat.items())[:60]
    )
    link = f"[MLflow run]({tracking.run_url(run_id)})" if run_id else "(no MLflow run found)"
    if run_id and (serve := tracking.ui_command()):  # a local store: say how to serve it
        link += f" (this run's store: `{serve}`)"
    key = stage.replace("@", "-").replace("_", "-").lower()
    create_markdown_artifact(
        key=f"{key}-metrics",
        description=f"stage {stage}",
        markdown=f"## {stage}\n{link}\n\n| metric | value |\n|---|---|\n{rows}",
    )


@flow(name="mmrpt-pipeline")
def pipeline(
    stages: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    model_path: str | None = None,
    workdir: str | None = None,
    max_parallel: int = 1,
    params_file: str | None = None,
    num_processes: int | None = None,
    score_workers: int | None = None,
) -> dict[str, dict]:
    """Reproduce the DVC pipeline in ``workdir`` (default: the current directory, the
    deployed checkout): ``stages`` (default all; a stage, a matrix group such as ``rl`` or an
    item such as ``rl@mmrpt-0``, with what they depend on) after making ``params_file`` its
    params.yaml (if given) and applying ``overrides`` (dotted params keys, e.g.
    {"warmup.max_steps": 200}; ``seed``, ``model_path``, ``num_processes`` (processes per
    training stage and score worker) and ``score_workers`` are shortcuts). Returns
    {DVC stage: its metrics}."""
    work = Path(workdir or ".").resolve()
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    if model_path is not None:
        overrides["model.path"] = model_path
    if num_processes is not None:
        overrides["launch.num_processes"] = num_processes
    if score_workers is not None:
        if score_workers < 1:
            raise ParamsError("score_workers must be >= 1")
        overrides["score.workers"] = list(range(score_workers))
    if max_parallel < 1:
        raise ParamsError("max_parallel must be >= 1")
    source = work / (params_file or "params.yaml")  # relative to the workdir or absolute
    params = load_params(source, overrides)  # fail before any work
    use_params_file(work, source)
    if overrides:
        write_overrides(work / "params.yaml", overrides)
    order, upstream = dvc_graph(work)
    chosen = select(order, upstream, stages)
    logger = get_run_logger()
    logger.info("%d DVC stages in %s: %s", len(chosen), work, ", ".join(chosen))
    cwd, key = os.getcwd(), flow_run.get_id() or ""  # key: this flow run's slots
    os.chdir(work)  # the MLflow store of this project (tracking_uri is relative)
    try:
        with tracking.pipeline_run(params):
            futures: dict[str, Any] = {}
            shared = concurrent(chosen, upstream)
            cost = {s: expected_seconds(s, params) for s in chosen}
            deps = {s: upstream[s] for s in chosen}
            _slots[key] = Slots(max_parallel, deps, critical_path(chosen, upstream, cost))
            for s in chosen:
                task_ = repro_stage.with_options(name=s.partition("@")[0])
                futures[s] = task_.submit(
                    s,
                    str(work),
                    max_parallel,
                    stage_threads(max_parallel, s in shared),
                    wait_for=[futures[d] for d in upstream[s] if d in futures],
                )
            wait(list(futures.values()))
            settle_lock(work, order)  # the whole graph's order: other stages' entries too
            return {s: f.result() for s, f in futures.items()}
    finally:
        _slots.pop(key, None)
        os.chdir(cwd)


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.pipeline [--max-parallel N] [STAGE ...]`` (`make main`: 2 at a
    time): the flow without a deployment, on Prefect's temporary server unless
    PREFECT_API_URL names one."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.pipeline", description=main.__doc__)
    ap.add_argument("stages", nargs="*", help="DVC stages (default: all)")
    ap.add_argument("--max-parallel", type=int, default=1, help="stages at a time")
    args = ap.parse_args(argv)
    pipeline(stages=args.stages or None, max_parallel=args.max_parallel)


if __name__ == "__main__":
    main()
