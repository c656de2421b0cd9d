"""`python -m mmrpt ...`: the one command-line entry point.

python -m mmrpt <stage> [-S key=value ...]            one pipeline stage
python -m mmrpt rl --arm mmrpt --seed 0               a per-run stage (rl, sft, eval)
python -m mmrpt score --worker 0                      a per-worker stage (score)
python -m mmrpt compare|passk|summary|dvc-yaml|plots-template ...   tools (``--help``)

Exit codes of a stage: 0 done; 2 bad params or input, or a refusal (the reason on one line;
MMRPT_LOG=DEBUG also logs the traceback); 1 an error of the machine (disk full, ...), one line
too; 75 an output is busy (another run writes it: try again later); 143 SIGTERM (stopped
cleanly: the MLflow run is marked KILLED; a training stage first finishes its step and saves a
checkpoint).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from mmrpt.config import ParamsError, load_params
from mmrpt.pipeline import NAMES, PER_RUN, PER_WORKER
from mmrpt.progress import quiet_third_party

log = logging.getLogger("mmrpt")

TOOLS = ("compare", "passk", "summary", "dvc-yaml", "plots-template", "study")


def _params_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. -S warmup.lr=1e-3",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrpt", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in NAMES:
        p = sub.add_parser(name, help=f"run the {name} stage")
        _params_args(p)
        if name in PER_RUN:
            p.add_argument("--arm", required=True, help="the arm (a key of `arms`)")
            p.add_argument("--seed", type=int, required=True, help="the replicate seed")
        if name in PER_WORKER:
            p.add_argument("--worker", type=int, required=True, help="the worker (score.workers)")
    p = sub.add_parser("compare", help="compare MLflow runs of one stage (table + plot)")
    p.add_argument("--stage", default="warmup", help="runs of this stage")
    p.add_argument(
        "--metrics",
        default="eval/image_gain,eval/loss_true_image",
        help="comma-separated metric names",
    )
    p.add_argument(
        "--params", dest="param_names", default="seed", help="comma-separated param names"
    )
    p.add_argument("--max-runs", type=int, default=20)
    p.add_argument("--out", default="compare.png", help="bar plots of the metrics")
    p.add_argument("--params-file", default="params.yaml")
    p = sub.add_parser("passk", help="greedy exact match vs pass@k of a fill-in policy")
    p.add_argument("--model", required=True, help="a local fill-in model folder")
    p.add_argument("--samples", required=True, help="masked samples (.jsonl)")
    p.add_argument("--root", default="data/world", help="image root (default: %(default)s)")
    p.add_argument("-n", type=int, default=16, help="samples per prompt (default: 16)")
    p.add_argument(
        "-T",
        "--temperature",
        type=float,
        default=0.8,
        help="sampling temperature (default: 0.8, params.yaml rl.temperature)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=96,
        help="greedy and sampled alike (default: 96, as the rl stage's eval)",
    )
    p.add_argument("--limit", type=int, default=300, help="first N samples (default: 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--baseline",
        help="also compare greedy exact match per sample with this "
        "model folder (e.g. the primer an arm started from)",
    )
    p.add_argument("--out", help="also write the result here (JSON)")
    p = sub.add_parser("summary", help="print the headline metrics and the report")
    p.add_argument("--metrics-dir", default="metrics")
    p.add_argument("--report", default="reports/report.md")
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from mmrpt/pipeline.py")
    p.add_argument("--out", default="dvc.yaml")
    p = sub.add_parser(
        "study", help="the study: the pipeline at caption bias 0 and > 0, arms compared"
    )
    p.add_argument("--biases", type=float, nargs="+", default=[0.0, 0.6])
    p.add_argument("--profile", default="profiles/study.yaml", help="the params overlay")
    p.add_argument("--root", default="studies/main", help="where the workspaces go")
    p.add_argument("--max-parallel", type=int, default=2, help="stage processes at once")
    p.add_argument("--out", default="reports/study")
    p.add_argument(
        "-S",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params override after the profile, e.g. -S 'seeds=[0,1]' (repeatable)",
    )
    p = sub.add_parser("plots-template", help="write the offline `dvc plots show` page template")
    p.add_argument("--out", default=".dvc/plots_page.html")
    return parser


def _fail(message: str) -> int:
    print(f"mmrpt: {message}", file=sys.stderr)
    return 2


def _tool(args) -> int:
    if args.command == "dvc-yaml":
        from mmrpt.pipeline import write_dvc_yaml

        print(f"wrote {write_dvc_yaml(args.out)}")
        return 0
    if args.command == "study":
        from flows.study import study

        try:
            study(
                biases=args.biases,
                profile=args.profile,
                root=args.root,
                max_parallel=args.max_parallel,
                out=args.out,
                overrides=args.overrides,
            )
        except ParamsError as e:
            return _fail(str(e))
        return 0
    if args.command == "plots-template":
        from mmrpt.report.dvc_plots import write_page_template

        print(f"wrote {write_page_template(args.out)}")
        return 0
    if args.command == "summary":
        from mmrpt.report.summary import print_summary

        print_summary(args.metrics_dir, args.report)
        return 0
    if args.command == "compare":
        from mmrpt.compare import compare

        return compare(
            load_params(args.params_file),
            args.stage,
            [m for m in args.metrics.split(",") if m],
            [p for p in args.param_names.split(",") if p],
            args.max_runs,
            Path(args.out),
        )
    from mmrpt.modeling import CheckpointError
    from mmrpt.rl.passk import run_passk

    if min(args.n, args.max_new_tokens, args.limit) < 1 or args.temperature <= 0:
        return _fail("passk: -n, --temperature, --max-new-tokens and --limit must be positive")
    try:
        result = run_passk(
            args.model,
            args.samples,
            args.root,
            n=args.n,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            limit=args.limit,
            seed=args.seed,
            baseline=args.baseline,
        )
    except (OSError, KeyError, ValueError, CheckpointError) as e:  # unreadable input
        return _fail(f"passk: {type(e).__name__}: {e}")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


REFERENCE_TIMES = Path(__file__).with_name("reference_times.json")
# third-party loggers whose INFO lines say nothing a user of a stage needs
QUIET_LOGGERS = ("lm_eval", "datasets", "httpx", "urllib3", "filelock", "alembic")


def pipeline_position(name: str, params, arm: str | None, seed: int | None) -> tuple[int, int]:
    """(k, N): this stage run's place among the pipeline's N stage runs (the arms x seeds
    matrix expanded, in declaration order)."""
    from mmrpt.pipeline import STAGES

    runs = [
        (s.name, a, r)
        for s in STAGES
        for a, r in (
            [(a, r) for a in params.arms for r in params.seeds] if s.per_run else [(None, None)]
        )
    ]
    return runs.index((name, arm, seed)) + 1 if (name, arm, seed) in runs else 0, len(runs)


def reference_seconds(name: str, params, arm: str | None, same_params: bool = True) -> float | None:
    """How long this stage took in the measured embedded main job (bench/main_job.py): only
    where the params are the main job's (a study workspace, another profile or an override
    computes something else, and real models and data take what they take), unless
    ``same_params`` is False (the flow orders its stages by these times, whatever the
    params)."""
    from mmrpt.tracking import params_hash

    if not REFERENCE_TIMES.exists():
        return None
    reference = json.loads(REFERENCE_TIMES.read_text())
    if same_params and reference.get("params_hash") != params_hash(params):
        return None
    times = reference["stages_s"]
    objective = params.arms[arm].objective if arm else None
    return times.get(f"{name}/{objective}") or times.get(name)


def run_stage(
    name: str,
    params,
    arm: str | None = None,
    seed: int | None = None,
    worker: int | None = None,
) -> dict:
    """Run one stage in this process (the CLI and tests call this): its inputs checked, its
    outputs locked and claimed (mmrpt.stagerun), the MLflow store writable; with a progress
    line at its start and end. In a process of a launched multi-process run, the stage must
    be a distributed one and the run's size must be launch.num_processes; the process group
    is made here and closed at the end, when every process has finished (the main one
    evaluates alone after training)."""
    from mmrpt import distributed, tracking
    from mmrpt.pipeline import context, stage
    from mmrpt.stagerun import prepared

    ctx = context(name, params, arm, seed, worker)
    if stage(name).distributed:
        from mmrpt.launch import check_world

        check_world(ctx.params.launch)  # this process's run has launch.num_processes
        if distributed.launched():
            distributed.init(ctx.params.launch.backend)
    elif distributed.launched():
        raise ParamsError(f"stage {name} runs in one process: start it without a launcher")
    label = f"{name}/{ctx.run_name}" if ctx.stage.per_run else name
    k, n = pipeline_position(name, params, arm, seed)
    ref = reference_seconds(name, params, arm)
    log.info(
        "stage %s (%d of %d)%s",
        label,
        k,
        n,
        f", about {ref:.0f} s in the reference main job" if ref else "",
    )
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"mmrpt.stages.{name}")
        if hasattr(module, "preflight"):  # params checks that need no input but the data
            module.preflight(ctx)
        with prepared(ctx):
            tracking.check_store(params)
            result = module.run(ctx)
        distributed.barrier()  # the other processes end with the main one, not before it
        log.info("stage %s done in %.0f s (%d of %d)", label, time.perf_counter() - t0, k, n)
        return result
    finally:
        distributed.finish()
        record = os.environ.get("MMRPT_RECORD_READS")
        if record:  # which declared params the stage really read (tests/test_pipeline.py)
            with open(record, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": name, "reads": sorted(ctx.params.reads)}) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MMRPT_LOG", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # TRL 1.16 still calls transformers 5's deprecated is_gradient_checkpointing each step of
    # GRPO; the warning is theirs to fix and says nothing about our run
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
    quiet_third_party()
    if args.command in TOOLS:
        try:
            return _tool(args)
        except ParamsError as e:  # compare's params file
            return _fail(str(e))
    try:
        params = load_params(args.params, args.overrides)
    except (ParamsError, FileNotFoundError) as e:
        return _fail(str(e))
    where = {k: getattr(args, k, None) for k in ("arm", "seed", "worker")}
    return _stage(args.command, params, where, argv)


def _stage(name: str, params, where: dict, argv: list[str]) -> int:
    """Run a stage; expected failures become one line and an exit code (module docstring)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from mmrpt import tracking
    from mmrpt.launch import needs_relaunch, preflight, relaunch, single_process_env
    from mmrpt.modeling import CheckpointError
    from mmrpt.pipeline import context, stage
    from mmrpt.safety import Refused
    from mmrpt.signals import Terminated, sigterm_handler
    from mmrpt.stagerun import BUSY_EXIT, Busy

    log = logging.getLogger("mmrpt")
    try:
        if stage(name).distributed and needs_relaunch(params.launch):
            preflight(context(name, params, **where))
            return relaunch(params.launch, argv)  # this command in launch.num_processes
        if stage(name).distributed:
            single_process_env(params.launch)
        with sigterm_handler(), tracking._quiet_store_errors():
            run_stage(name, params, **where)
    except (ParamsError, Refused, CheckpointError, FileNotFoundError) as e:
        # ParamsError here: a check that needs the model or data (e.g. score.layers)
        log.debug("%s failed", name, exc_info=True)
        return _fail(f"{name}: {e}")
    except Busy as e:
        print(f"mmrpt: {name}: {e}", file=sys.stderr)
        return BUSY_EXIT
    except Terminated as e:
        print(f"mmrpt: {name}: stopped by SIGTERM; rerun to resume", file=sys.stderr)
        return e.code
    except OSError as e:  # the machine's (a full disk, ...): may pass on a retry
        log.debug("%s failed", name, exc_info=True)
        print(f"mmrpt: {name}: {e}", file=sys.stderr)
        return 1
    except (MlflowException, SQLAlchemyError) as e:  # the store failed mid-run
        log.debug("%s failed", name, exc_info=True)
        store = params.tracking.tracking_uri
        why = tracking.root_cause(e) + tracking.store_note(params)
        return _fail(f"{name}: MLflow store {store} failed: {why}")
    return 0
