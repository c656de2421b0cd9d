"""What every stage run checks and holds before it works (mmrpt.cli.run_stage), from the
stage's declaration (mmrpt.pipeline):

- inputs: every declared input exists, else ``InputMissing`` naming it and the command that
  makes it (one line, exit 2), instead of a traceback from deep inside the stage;
- a lock per output: the run takes one lock per output path it writes (filelock, lock files
  in ``.mmrpt/locks/``), without waiting. A second run that would write any of the same
  outputs (a second ``python -m mmrpt warmup``, a ``dvc repro`` or a Prefect task on the same
  workspace) refuses with ``Busy``, naming the holder (exit 75: try again later; Prefect
  retries it). Runs writing different outputs (``rl@mmrpt-0`` and ``rl@ntp-0``, which DVC
  and the flow run concurrently) do not wait for each other. A lock dies with its process.
- outputs: every declared output folder is claimed (mmrpt.safety.claim: created with the
  project's marker, or refused naming the param when it holds someone else's files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from mmrpt.contract import StageContext, resolve
from mmrpt.safety import MARKER, STATE_DIR, Refused, claim

BUSY_EXIT = 75  # EX_TEMPFAIL: the workspace is busy, try again later


class InputMissing(Refused):
    """A declared input of the stage does not exist."""


class Busy(RuntimeError):
    """Another run holds an output of this run."""


def _param_key(template: str) -> str:
    """'${rl.out_dir}/${item.arm}-${item.seed}' -> 'rl.out_dir'."""
    keys = [k for k in re.findall(r"\$\{([\w.]+)\}", template) if not k.startswith("item.")]
    return keys[0] if keys else template


def _producer(ctx: StageContext, path: Path) -> str | None:
    """The command that writes ``path`` (or files under it), from the declarations."""
    from mmrpt.pipeline import STAGES

    target = Path(os.path.abspath(path))
    for s in STAGES:
        for table in (s.outs, s.metrics, s.tables):
            for template in table.values():
                item = ctx.item if s.per_run and ctx.stage.per_run else None
                if s.per_run and item is None:
                    item = {"arm": "<arm>", "seed": "<seed>"}
                if s.workers:
                    item = {"worker": "<w>"}
                p = Path(os.path.abspath(resolve(template, ctx.full, item)))
                if p == target or target in p.parents:
                    run = f" --arm {item['arm']} --seed {item['seed']}" if s.per_run else ""
                    run = " --worker <w> (each of score.workers)" if s.workers else run
                    return f"python -m mmrpt {s.name}{run}"
    return None


def check_inputs(ctx: StageContext) -> None:
    from mmrpt.pipeline import INPUTS

    for name, template in ctx.stage.deps.items():
        path = ctx.dep(name)
        if not path.exists() and template not in INPUTS.values():  # real inputs: optional
            make = _producer(ctx, path)
            hint = f": run `{make}` first" if make else ""
            raise InputMissing(
                f"stage {ctx.stage.name} needs its input {name} at {path} ({template}), "
                f"which does not exist{hint}"
            )


def outputs(ctx: StageContext) -> dict[str, Path]:
    """{params key or path template: path} of everything the run writes."""
    found = {}
    for table, path_of in (
        (ctx.stage.outs, ctx.out),
        (ctx.stage.metrics, ctx.metrics_path),
        (ctx.stage.tables, ctx.table_path),
    ):
        for name, template in table.items():
            found[_param_key(template)] = path_of(name)
    return found


def _holder(info: Path) -> str:
    try:
        h = json.loads(info.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"]))
        return f"{h['command']} (pid {h['pid']} on {h['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"


@contextlib.contextmanager
def output_locks(ctx: StageContext) -> Iterator[None]:
    """Hold one lock per output of the run (see the module docstring)."""
    folder = Path(STATE_DIR).resolve() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted({os.path.realpath(p) for p in outputs(ctx).values()})
    command = f"mmrpt {ctx.stage.name}" + (f" {ctx.run_name}" if ctx.stage.per_run else "")
    with contextlib.ExitStack() as held:
        for real in paths:
            key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:24]
            lock = FileLock(folder / f"{key}.lock", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise Busy(
                    f"{real} is being written by {_holder(folder / f'{key}.json')}: wait for "
                    "it to finish (two runs on one output would clobber each other)"
                ) from None
            held.callback(lock.release)
            info = {"command": command, "pid": os.getpid(), "host": socket.gethostname()}
            (folder / f"{key}.json").write_text(json.dumps(info | {"since": time.time()}))
        yield


@contextlib.contextmanager
def prepared(ctx: StageContext) -> Iterator[None]:
    """Inputs checked, outputs locked and claimed, for the body of one stage run. In a
    multi-process stage the main process locks and claims; the others wait for its verdict
    (a refusal there ends every process with the same error)."""
    from mmrpt import distributed

    check_inputs(ctx)
    if not distributed.is_main():
        problem = distributed.broadcast(None)
        if problem:
            raise Refused(problem)
        yield
        return
    told = False
    try:
        with _locked_and_claimed(ctx):
            distributed.broadcast("")  # the others go on
            told = True
            yield
    except (Busy, Refused) as e:
        if not told:
            distributed.broadcast(str(e))
        raise


def is_file_output(template: str) -> bool:
    """A declared output that is one file (``heads.json``, ``<run>.parquet``), not a folder."""
    return Path(template).suffix in (".json", ".parquet", ".csv", ".jsonl")


@contextlib.contextmanager
def _locked_and_claimed(ctx: StageContext) -> Iterator[None]:
    with output_locks(ctx):
        folders = {n: t for n, t in ctx.stage.outs.items() if not is_file_output(t)}
        made = {}  # new folder -> the highest folder this run created for it
        for name in folders:
            path = Path(os.path.abspath(ctx.out(name)))
            top = path
            while not top.parent.exists():
                top = top.parent
            if not path.exists():
                made[path] = top
        for name, template in folders.items():
            claim(ctx.out(name), _param_key(template))
        # file outputs are written atomically (mmrpt.io), their folder made on the first write
        try:
            yield
        except BaseException:  # a run that fails early leaves no new (empty) output folder
            for folder, top in made.items():
                if folder.is_dir() and [f.name for f in folder.iterdir()] == [MARKER]:
                    (folder / MARKER).unlink()
                    while True:  # and the empty folders above it that this run made
                        folder.rmdir()
                        if folder == top or any(folder.parent.iterdir()):
                            break
                        folder = folder.parent
            raise
