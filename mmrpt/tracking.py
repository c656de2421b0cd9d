"""The one module that talks to MLflow.

Each stage is one MLflow run named after the stage, in a SQLite store under mlruns/ (artifacts
beside it). Training loops report through `mmrpt.stages.step_logger.StepLogger`, a
transformers callback, so metrics are logged per step (it lives there so that the stages that
train nothing import neither transformers nor torch: ~10 s of start-up each, docs/PERF.md).
A resumed stage continues its MLflow run: the run id is kept in the stage's checkpoint
folder. A process killed with kill -9 cannot close its run; every run carries its
host and pid as tags, and the next stage or pipeline run started on that host marks runs whose
process is gone as KILLED (close_orphaned_runs); a stage stopped by SIGTERM marks its own run
KILLED. A resumed run does not log a training step twice (StepLogger), so its curves are those
of an uninterrupted run.

In a multi-process stage (mmrpt/launch.py) only rank 0 talks to MLflow: on the other ranks
stage_run opens no run and every log function does nothing, so a stage is one run at any
world size. With a tracking server ($MMRPT_TRACKING_URI, or tracking.tracking_uri http(s)),
artifacts go where the server keeps them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from mmrpt import distributed
from mmrpt.config import Params
from mmrpt.safety import Refused

log = logging.getLogger(__name__)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


FALLBACK_URI = "sqlite:///mlruns/mlflow.db"


class StoreError(Refused):
    """The MLflow store cannot be written (read-only, corrupt, deleted): the message names it."""


def root_cause(e: BaseException) -> str:
    """The innermost cause's message, first line (e.g. sqlite's 'attempt to write a readonly
    database' under SQLAlchemy's and MLflow's wrappers)."""
    while e.__cause__ is not None or getattr(e, "orig", None) is not None:
        e = e.__cause__ if e.__cause__ is not None else e.orig
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


@contextmanager
def _quiet_store_errors() -> Iterator[None]:
    """MLflow's SQL store logs each failure with a full traceback; we report it in one line
    (MMRPT_LOG=DEBUG keeps MLflow's)."""
    noisy = logging.getLogger("mlflow.store.db.utils")
    level = noisy.level
    if not log.isEnabledFor(logging.DEBUG):
        noisy.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        noisy.setLevel(level)


def check_store(params: Params) -> None:
    """Fail before any work if the MLflow store cannot be opened and written (StoreError)."""
    from sqlalchemy.exc import SQLAlchemyError

    uri = params.tracking.tracking_uri
    with _quiet_store_errors():
        try:
            experiment_id = configure(params)
            mlflow.MlflowClient().set_experiment_tag(experiment_id, "mmrpt.store", "writable")
        except (MlflowException, SQLAlchemyError, OSError) as e:
            raise StoreError(f"MLflow store {uri} cannot be written: {root_cause(e)}") from e


def store_note(params: Params) -> str:
    """' (it was deleted while the stage ran)' when a SQLite store's file is gone, else ''."""
    db = _sqlite_file(params.tracking.tracking_uri)
    return " (it was deleted while the stage ran)" if db is not None and not db.exists() else ""


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _reachable(uri: str, timeout: float = 3.0) -> bool:
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)
        return True
    except OSError:
        return False


URI_ENV = "MMRPT_TRACKING_URI"


def tracking_uri(params: Params) -> str:
    """$MMRPT_TRACKING_URI (e.g. the MLflow server of many workers, set by a deployment's job
    template) or tracking.tracking_uri. Not $MLFLOW_TRACKING_URI: mlflow.set_tracking_uri
    sets that in this process, and child processes started elsewhere would inherit it."""
    return os.environ.get(URI_ENV) or params.tracking.tracking_uri


def configure(params: Params) -> str:
    """Point MLflow at the project's store; return the experiment id."""
    t = params.tracking
    uri = tracking_uri(params)
    if uri.startswith(("http://", "https://")) and not _reachable(uri):
        log.warning(
            "MLflow server %s unreachable: logging to the local store %s instead", uri, FALLBACK_URI
        )
        uri = FALLBACK_URI
    if uri.startswith("sqlite:///"):
        # absolute, so MLflow's per-URI store cache cannot mix up two working directories
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(t.experiment)
    if exp is not None:
        if exp.tags.get(KIND_TAG) != KIND:
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    if uri.startswith(("http://", "https://")):  # the server's artifact store
        return mlflow.create_experiment(t.experiment)
    location = Path(t.artifact_root).resolve()
    location.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(
        t.experiment, artifact_location=location.as_uri(), tags={KIND_TAG: KIND}
    )


# MLflow 3's UI opens an experiment in its GenAI view unless it is tagged as model training
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


PARENT_ENV = "MMRPT_PARENT_RUN_ID"
PIPELINE_TAG = "mmrpt.pipeline_key"
HOST_TAG, PID_TAG, CLOSED_TAG = "mmrpt.host", "mmrpt.pid", "mmrpt.closed_by"


def _host() -> str:
    """This machine as its processes see it: the hostname, plus (on Linux) the boot and the
    pid namespace, so containers that share a hostname but not pids never judge each
    other's processes."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "/".join(parts)


def _owner() -> dict[str, str]:
    return {HOST_TAG: _host(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def close_orphaned_runs(experiment_id: str, keep: str | None = None) -> list[str]:
    """Mark KILLED the runs left RUNNING by processes of this host that no longer exist (a
    kill -9 ends a process before MLflow can close its run); ``keep``: a run about to be
    resumed. A run from another host, or whose pid is alive (or reused), is left alone. A
    failure here (e.g. a server that refuses the update) is logged, never fatal."""
    client = mlflow.MlflowClient()
    closed = []
    try:
        runs = client.search_runs(
            [experiment_id],
            max_results=1000,
            filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{_host()}'",
        )
        for run in runs:
            pid = run.data.tags.get(PID_TAG, "")
            if run.info.run_id != keep and pid.isdigit() and not _alive(int(pid)):
                client.set_tag(
                    run.info.run_id, CLOSED_TAG, f"pid {os.getpid()}: process {pid} gone"
                )
                client.set_terminated(run.info.run_id, status="KILLED")
                closed.append(run.info.run_id)
    except (MlflowException, OSError) as e:
        log.warning("could not close MLflow runs of dead processes: %s", e)
    if closed:
        log.warning(
            "marked %d MLflow run(s) KILLED, their process is gone: %s",
            len(closed),
            ", ".join(closed),
        )
    return closed


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def dvc_out_hashes(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """{output path: md5} of every stage output recorded in dvc.lock (empty if none)."""
    if not lock.exists():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    hashes = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs", []):
            if "md5" in out:
                hashes[out["path"]] = out["md5"]
    return hashes


def params_hash(params: Params) -> str:
    """A short digest of the validated params (every key, defaults included)."""
    blob = json.dumps(params.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_tags(params: Params) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "params_hash": params_hash(params)}
    data_hash = dvc_out_hashes().get(params.data.out_dir)
    if data_hash:
        tags["dvc_data_hash"] = data_hash
    return tags


@contextmanager
def pipeline_run(params: Params, name: str = "pipeline") -> Iterator[str]:
    """A parent run for one pipeline run; stage runs started while it is open (in this
    process or in child processes, via $MMRPT_PARENT_RUN_ID) nest under it."""
    experiment_id = configure(params)
    close_orphaned_runs(experiment_id)
    with mlflow.start_run(run_name=name, experiment_id=experiment_id) as run:
        mlflow.set_tags(run_tags(params) | _owner() | {"kind": "pipeline"})
        previous = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = run.info.run_id
        try:
            yield run.info.run_id
        finally:
            if previous is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = previous


def pipeline_parent(params: Params, experiment_id: str) -> str:
    """The parent run of a pipeline run that has no explicit one (``dvc repro``: every stage
    is its own process): one parent per (git commit, params), found by its key tag or made,
    so the stages of one ``dvc repro`` or ``dvc exp run`` nest under one run and a changed
    params.yaml starts another."""
    key = hashlib.sha256(
        json.dumps(
            [git_commit(), params.model_dump(exclude={"tracking"})], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'", max_results=1
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {key[:8]}",
        tags=run_tags(params) | {"kind": "pipeline", PIPELINE_TAG: key},
    )
    client.set_terminated(run.info.run_id, "FINISHED")  # a label for its stages, not a process
    return run.info.run_id


def torch_threads() -> int:
    """The intra-op threads this stage computes with: torch's own count where the stage uses
    torch, else what torch would take (OMP_NUM_THREADS, else the cores)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


@contextmanager
def stage_run(ctx, run_id_file: Path | None = None) -> Iterator[str]:
    """An MLflow run for one stage (``ctx``: its mmrpt.contract.StageContext), named
    ``<stage>`` or ``<stage>/<arm>-<seed>``, logging exactly the params the stage declares;
    yields the run id.

    With ``run_id_file``, a run id found there is resumed and a new one is written there.
    Nested under $MMRPT_PARENT_RUN_ID when set (a Prefect flow run), else under the parent of
    this pipeline run (pipeline_parent). On ranks other than 0 of a multi-process stage: no
    run (yields None).
    """
    if not distributed.is_main():
        yield None
        return
    stage = ctx.stage.name
    name = f"{stage}/{ctx.run_name}" if ctx.item else stage
    experiment_id = configure(ctx.full)
    run_id = None
    if run_id_file is not None and run_id_file.exists():
        run_id = run_id_file.read_text().strip() or None
    close_orphaned_runs(experiment_id, keep=run_id)
    if run_id is not None:  # claim it before it shows RUNNING again
        client = mlflow.MlflowClient()
        try:
            tags = client.get_run(run_id).data.tags
        except MlflowException:  # e.g. mlruns/ was deleted but the checkpoints were kept
            log.warning("MLflow run %s of %s not found: starting a new run", run_id, run_id_file)
            run_id = None
        else:
            for key, value in _owner().items():
                client.set_tag(run_id, key, value)
            if CLOSED_TAG in tags:
                client.delete_tag(run_id, CLOSED_TAG)
    kwargs = {}
    if run_id is None:
        parent = os.environ.get(PARENT_ENV) or pipeline_parent(ctx.full, experiment_id)
        kwargs = {"parent_run_id": parent, "nested": True}
    db = _sqlite_file(mlflow.get_tracking_uri())
    inode = db.stat().st_ino if db is not None and db.exists() else None
    with (
        _store_kept(db, inode),
        mlflow.start_run(
            run_id=run_id, run_name=name, experiment_id=experiment_id, **kwargs
        ) as run,
    ):
        if run_id is None:
            mlflow.log_params(
                {k: "null" if v is None else v for k, v in ctx.logged_params().items()}
            )
            tags = {"stage": stage, "threads": str(torch_threads())}
            if ctx.stage.per_run:
                tags |= {"arm": ctx.arm, "replicate": str(ctx.seed), "run": ctx.run_name}
            if ctx.stage.workers:
                tags |= {"worker": str(ctx.worker)}
            mlflow.set_tags(run_tags(ctx.full) | _owner() | tags)
        if run_id_file is not None:
            run_id_file.parent.mkdir(parents=True, exist_ok=True)
            run_id_file.write_text(run.info.run_id)
        with _killed_on_sigterm():
            yield run.info.run_id


@contextmanager
def _store_kept(db: Path | None, inode: int | None) -> Iterator[None]:
    """A SQLite store deleted or replaced while the stage ran took the run with it, silently
    (the open file keeps taking writes): say so, naming the store."""
    yield
    if db is not None and inode is not None:
        now = db.stat().st_ino if db.exists() else None
        if now != inode:
            raise StoreError(
                f"MLflow store sqlite:///{db} was deleted or replaced while the stage ran: "
                "its run is lost (the stage's outputs are complete; rerun to track it)"
            )


@contextmanager
def _killed_on_sigterm() -> Iterator[None]:
    """A run that ends by SIGTERM (mmrpt.signals.Terminated) is marked KILLED, not FAILED
    (inside mlflow.start_run: it then finds the run ended)."""
    from mmrpt.signals import Terminated

    try:
        yield
    except Terminated:
        if mlflow.active_run() is not None:
            mlflow.end_run("KILLED")
        raise


STATE_DIR = Path(".mmrpt")  # the workspace's private state (git-ignored, not a DVC output)


def resume_file(checkpoints: Path) -> Path:
    """Where a resumable stage keeps the MLflow run id of its checkpoints: outside them (so
    the checkpoint folders, DVC outputs, are the same bytes whichever MLflow run made them),
    keyed by their folder and fingerprint (new checkpoints, new run)."""
    stamp = checkpoints / "fingerprint.txt"
    fingerprint = stamp.read_text().strip()[:16] if stamp.exists() else "none"
    folder = checkpoints.resolve()
    if folder.is_relative_to(Path.cwd().resolve()):
        folder = folder.relative_to(Path.cwd().resolve())
    name = re.sub(r"[^\w.-]", "_", str(folder))
    return STATE_DIR / "mlflow" / f"{name}-{fingerprint}.txt"


def _main_only(fn):
    """A log function that does nothing on ranks other than 0."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs) if distributed.is_main() else None

    return wrapped


@_main_only
def log_model(folder: str | Path, name: str) -> None:
    """A stage's final model: its folder as the run's ``model`` artifact, registered as a new
    version of the registered model ``mmrpt-<name>`` (one per stage, or per stage and arm).
    Load it with ``load_vlm(mlflow.artifacts.download_artifacts("models:/mmrpt-<name>/latest"))``.
    """
    log_artifact(folder, "model")
    # a HF folder, not an MLflow flavour: registered from its artifact URI (MLflow 3's
    # register_model("runs:/...") wants a LoggedModel with an MLmodel file)
    client, name = mlflow.MlflowClient(), f"mmrpt-{name}"
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"final models of stage {name[6:]}")
    run = mlflow.active_run()
    client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )


def run_url(run_id: str) -> str:
    """Where the run is in the MLflow UI: the tracking server itself when the store is one,
    else the local UI address ($MLFLOW_UI_URL, default http://127.0.0.1:5000)."""
    uri = mlflow.get_tracking_uri()
    base = (
        uri
        if uri.startswith(("http://", "https://"))
        else os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000")
    )
    exp = mlflow.get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def ui_command() -> str | None:
    """The command that serves this store in the MLflow UI (None for a tracking server)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def metric_name(key: str) -> str:
    """MLflow allows only alphanumerics and _ - . space : / in metric names."""
    return re.sub(r"[^\w\-. :/]", "_", key)


@_main_only
def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    numeric = {
        metric_name(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric, step=step)


@_main_only
def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


@_main_only
def log_dict(d: dict, name: str) -> None:
    mlflow.log_text(json.dumps(d, indent=2, default=str), name)


COMPLETIONS_TABLE = "completions.json"


@_main_only
def log_completions(table: dict[str, list], artifact_file: str = COMPLETIONS_TABLE) -> None:
    """Append sample completions to one MLflow table artifact (its ``step`` column tells the
    steps apart). MLflow stores a column of PIL images as image files that the table references
    and the UI shows; it refuses a column that mixes images and None, so such a column is
    dropped."""
    table = dict(table)
    if "image" in table and not all(im is not None for im in table["image"]):
        table.pop("image")
    mlflow.log_table(data=table, artifact_file=artifact_file)


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


def logged_steps(run_id: str, prefix: str) -> dict[str, int]:
    """{metric: its last logged step} of the run's metrics named ``prefix...``."""
    client = mlflow.MlflowClient()
    names = [k for k in client.get_run(run_id).data.metrics if k.startswith(prefix)]
    return {k: max(m.step for m in client.get_metric_history(run_id, k)) for k in names}


def child_run_id(parent_run_id: str, stage: str) -> str | None:
    """The latest stage run named ``stage`` nested under ``parent_run_id``."""
    runs = mlflow.search_runs(
        search_all_experiments=True,
        output_format="list",
        max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
        f"tags.mlflow.runName = '{stage}'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def search_stage_runs(params: Params, stage: str | None = None, max_results: int = 50):
    """Runs of the project's experiment as a pandas DataFrame (newest first)."""
    experiment_id = configure(params)
    filt = f"tags.stage = '{stage}'" if stage else ""
    return mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=filt,
        max_results=max_results,
        order_by=["attributes.start_time DESC"],
    )


@_main_only
def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)
