"""Main-job benchmark: wall time and peak memory of the embedded main job (all stages and arms,
one seed) as `make main` runs it, in a fresh temporary copy of the repository: the Prefect
pipeline flow over the DVC stages, ``--flow N`` (default 2, the Makefile's) stages at a time,
so the arms run side by side with one torch thread each on two cores (Prefect's temporary
server, its home in the copy). ``--flow 0``: plain `dvc repro`, one stage after another.

The copy is `git archive <ref>` (committed code, no outputs, no dvc.lock or metrics), made a
git repository of its own; it runs with this .venv's bin first on PATH and the copy first on
PYTHONPATH. Peak memory: the summed RSS of the whole process tree (dvc and every stage
process), sampled every 0.5 s with psutil, and the largest single process
(getrusage(RUSAGE_CHILDREN).ru_maxrss). ``overrides`` (dotted params keys, as `-S` of the CLI,
or a YAML file of params sections merged key by key) shrink the job for a quick check of this
code path; the real figure takes none (~15 minutes).

    python bench/main_job.py [--params-file small.yaml] [-S rl.steps=2 ...] [--ref HEAD] [--keep]
        [--flow 0] [--json out.json] [--reference-times mmrpt/reference_times.json]

``--reference-times`` (the real main job only) writes the per-stage seconds the CLI shows as
"about N s in the reference main job": per stage, and per rl objective (rl/grpo, rl/sft, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def file_overrides(path: str | Path) -> list[str]:
    """A YAML file of params sections as dotted KEY=VALUE overrides (merged key by key)."""

    def flat(d: dict, prefix: str = ""):
        for k, v in d.items():
            if isinstance(v, dict) and v:
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}={json.dumps(v)}"

    return list(flat(yaml.safe_load(Path(path).read_text()) or {}))


def fresh_copy(dest: Path, ref: str, overrides: list[str]) -> None:
    from mmrpt.config import apply_overrides

    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(dest / "metrics", ignore_errors=True)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(
        yaml.safe_dump(apply_overrides(raw, overrides), sort_keys=False)
    )
    env = git_env()
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench copy"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run(overrides: list[str] = (), ref: str = "HEAD", keep: bool = False, flow: int = 2) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mmrpt-mainjob-"))
    repo = tmp / "repo"
    fresh_copy(repo, ref, list(overrides))
    if flow and "--max-parallel" not in (repo / "flows/pipeline.py").read_text():
        # before df26ab0 `python -m flows.pipeline` took no arguments: it would run one stage
        # at a time and the comparison would be of another job
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{ref}: its flow has no --max-parallel; measure it with --flow 0")
    env = {
        **git_env(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
    command = ["dvc", "repro"]
    if flow:
        command = [sys.executable, "-m", "flows.pipeline", "--max-parallel", str(flow)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    watched = psutil.Process(proc.pid)
    peak, stages, ran, lines = 0, {}, {}, []
    os.set_blocking(proc.stdout.fileno(), False)
    while True:
        peak = max(peak, tree_rss(watched))
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if m := re.search(r"Running stage '([^']+)'", line):
                stages[m[1]] = time.perf_counter() - t0
            elif m := re.search(r" - (\S+): ran in (\d+) s", line):  # the flow's
                ran[m[1]] = float(m[2])
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    lines.extend(proc.stdout.read().splitlines(keepends=True))
    wall = time.perf_counter() - t0
    (tmp / "main_job.log").write_text("".join(lines))  # kept with --keep
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed in {repo}:\n{''.join(lines[-40:])}")
    starts = sorted(stages.items(), key=lambda kv: kv[1])
    durations = ran or {  # dvc repro: one stage after another
        name: (starts[i + 1][1] if i + 1 < len(starts) else wall) - t
        for i, (name, t) in enumerate(starts)
    }
    res = {
        "wall_s": wall,
        "peak_tree_mb": peak / 2**20,
        "peak_process_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "stages_s": durations,
        "overrides": list(overrides),
        "ref": ref,
        "flow": flow,
        "copy": str(repo) if keep else None,
    }
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def report(res: dict) -> str:
    over = " ".join(f"-S {o}" for o in res["overrides"]) or "none (the real main job)"
    how = f"pipeline flow, {res['flow']} stages at a time" if res.get("flow") else "dvc repro"
    lines = [
        f"main job ({how}, fresh copy of {res['ref']}; overrides: {over})",
        f"wall {res['wall_s']:.0f} s (bar 900 s), peak RSS of the process tree "
        f"{res['peak_tree_mb']:.0f} MB, largest process {res['peak_process_mb']:.0f} MB",
        "  " + ", ".join(f"{k} {v:.0f} s" for k, v in res["stages_s"].items()),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override in the copy (repeatable)",
    )
    ap.add_argument("--params-file", help="YAML of params sections merged into the copy's")
    ap.add_argument("--ref", default="HEAD", help="the commit to copy")
    ap.add_argument("--keep", action="store_true", help="keep the copy")
    ap.add_argument(
        "--flow", type=int, default=2, help="the flow, N stages at a time (0: dvc repro)"
    )
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--reference-times", help="write per-stage reference seconds here")
    args = ap.parse_args()
    overrides = (file_overrides(args.params_file) if args.params_file else []) + args.overrides
    res = run(overrides, args.ref, args.keep, args.flow)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.reference_times:
        if overrides:
            raise SystemExit("--reference-times: only from the real main job (no overrides)")
        Path(args.reference_times).write_text(json.dumps(reference_times(res), indent=2) + "\n")


def reference_times(res: dict) -> dict:
    """{"stages_s": {stage or "rl/<objective>": seconds}}: the slowest item of each."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    arms = params["arms"]
    out: dict[str, float] = {}
    for item, seconds in res["stages_s"].items():
        name, _, run = item.partition("@")
        key = name
        if name == "rl" and run:
            key = f"rl/{arms[run.rsplit('-', 1)[0]]['objective']}"
        out[key] = round(max(out.get(key, 0.0), seconds), 1)
    from mmrpt.config import load_params
    from mmrpt.tracking import params_hash

    # the params these times hold for: the CLI shows them only for a run with the same params
    return {
        "ref": res["ref"],
        "wall_s": round(res["wall_s"]),
        "params_hash": params_hash(load_params(ROOT / "params.yaml")),
        "stages_s": out,
    }


if __name__ == "__main__":
    main()
