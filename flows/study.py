"""The study as one Prefect flow (issue 17): the pipeline at each caption-bias value in its own
DVC workspace (mmrpt.workspace), then the paired comparison of the arms.

Each workspace is a copy of this checkout whose params.yaml is params.yaml with the study's
overlay (profiles/study.yaml: arms, seeds, attribute masks, short completions, per-probe
outcomes, SFT budgets) and ``data.caption_bias`` set; the pipeline flow (flows/pipeline.py)
reproduces it with DVC, so a rerun reruns only what changed. The workspaces run one after
the other, each with ``max_parallel`` stage slots; the pipeline flow gives a stage that may run
beside another cores/max_parallel threads and one that always runs alone (data to primer) all
cores (flows.pipeline.stage_threads). Then mmrpt.report.study summarises each bias value:
metrics/study.json, reports/study/ (report.md, curves.png, forest.png); every stage run is in
MLflow as usual. Finished workspaces of other bias values under the same root (an earlier
run's) are summarised beside the ones run, so `--biases 0.6 -S 'seeds=[...]'` after the
default study still reports the change from bias 0 (``summarised_only`` in study.json).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, get_run_logger

from flows.pipeline import pipeline
from mmrpt.config import Params, ParamsError, apply_overrides
from mmrpt.io import write_json_atomic, write_text_atomic
from mmrpt.workspace import checkout_copy, overlay


def workspace_params(
    base: Path, profile: Path, bias: float, overrides: list[str] | None = None
) -> dict:
    """params.yaml + the study overlay + ``overrides`` (KEY=VALUE, as `-S`; a key's value
    replaces it whole, e.g. ``seeds=[0, 1]``) + this caption bias, validated."""
    raw = overlay(
        yaml.safe_load((base / "params.yaml").read_text()) or {},
        yaml.safe_load(profile.read_text()) or {},
    )
    raw = apply_overrides(raw, list(overrides or []))
    raw = overlay(raw, {"data": {"caption_bias": bias}})
    try:
        Params.model_validate(raw)
    except Exception as e:  # noqa: BLE001 - the schema's message names the key
        where = " ".join([str(profile), *(f"-S {o}" for o in overrides or [])])
        raise ParamsError(f"{where} with data.caption_bias={bias}: {e}") from None
    return raw


def run_files(ws: Path, p: Params) -> dict[tuple[str, int], tuple[Path, Path]]:
    """Per run (arm, seed) of a workspace with params ``p``: its per-probe outcome table and
    its rl metrics file."""
    return {
        (arm, seed): (
            ws / p.eval.out_dir / "outcomes" / f"{arm}-{seed}.parquet",
            ws / "metrics" / "rl" / f"{arm}-{seed}.json",
        )
        for arm in p.arms
        for seed in p.seeds
    }


def load_runs(ws: Path) -> tuple[dict, list[int], dict]:
    """The per-probe outcome tables of a workspace's runs {(arm, seed): table}, the SFT
    budgets (with the final step count) and the tokens per arm (first seed's rl run)."""
    p = Params.model_validate(yaml.safe_load((ws / "params.yaml").read_text()))
    files = run_files(ws, p)
    runs = {run: pd.read_parquet(outcomes) for run, (outcomes, _) in files.items()}
    tokens = {}
    for arm in p.arms:
        rl = json.loads(files[arm, p.seeds[0]][1].read_text())
        tokens[arm] = {
            k.removeprefix("tokens/"): v for k, v in rl.items() if k.startswith("tokens/")
        }
    return runs, [*p.sft.budgets, p.sft.steps], tokens


def finished_workspaces(root: Path, skip) -> dict[float, Path]:
    """The workspaces ``root``/bias-<b> (b not in ``skip``) whose every run has its outcome
    table and rl metrics: {b: workspace}. A workspace with a run missing is left out."""
    found = {}
    for ws in sorted(root.glob("bias-*")):
        try:
            b = float(ws.name.removeprefix("bias-"))
            if b in skip:
                continue
            p = Params.model_validate(yaml.safe_load((ws / "params.yaml").read_text()))
        except (ValueError, OSError, yaml.YAMLError):
            continue
        if all(f.is_file() for pair in run_files(ws, p).values() for f in pair):
            found[b] = ws
    return found


def write_study(
    base: Path,
    spaces: dict[float, Path],
    report: Path,
    meta: dict,
    n_boot: int = 2000,
    study_json: Path | None = None,
) -> dict:
    """Summarise each bias value's workspace (``spaces``: bias -> workspace): ``study_json``
    (default base/metrics/study.json; per bias, and the change of each comparison from bias
    0; workspaces under ``base`` named relative to it) and ``report`` (report.md, plots)."""
    from mmrpt.report.study import bias_effect, markdown, plots, summarise

    summary: dict = {}
    for b, ws in spaces.items():
        runs, budgets, tokens = load_runs(ws)
        summary[str(b)] = summarise(runs, budgets, tokens, n_boot=n_boot)
    effects = bias_effect(summary)
    where = {
        str(b): str(ws.relative_to(base) if ws.is_relative_to(base) else ws)
        for b, ws in spaces.items()
    }
    write_json_atomic(
        study_json or base / "metrics" / "study.json",
        {"study": summary, "bias_effect": effects, **meta, "workspaces": where},
    )
    write_text_atomic(report / "report.md", markdown(summary, effects=effects))
    plots(summary, report)
    return summary


@flow(name="mmrpt-study")
def study(
    biases: list[float] | None = None,
    profile: str = "profiles/study.yaml",
    root: str = "studies/main",
    max_parallel: int = 2,
    workdir: str | None = None,
    out: str = "reports/study",
    n_boot: int = 2000,
    overrides: list[str] | None = None,
) -> dict:
    """Run the pipeline at each caption bias (default 0 and 0.6) and compare the arms."""
    logger = get_run_logger()
    base = Path(workdir or ".").resolve()
    biases = list(biases if biases is not None else (0.0, 0.6))
    spaces = {}
    for b in biases:  # every workspace's params are checked before any work
        params = workspace_params(base, base / profile, b, overrides)
        spaces[b] = checkout_copy(base, base / root / f"bias-{b}", params)
    t0 = time.time()
    # one bias value after the other: a pipeline flow changes the process's working directory
    # and MLflow parent ($MMRPT_PARENT_RUN_ID) while it runs; its stages run max_parallel at
    # a time (the cores are the limit either way)
    for b, ws in spaces.items():
        pipeline(workdir=str(ws), max_parallel=max_parallel)
        logger.info("caption bias %s: pipeline done (%.0f s)", b, time.time() - t0)
    others = finished_workspaces(base / root, set(spaces))
    if others:
        logger.info("also summarised (finished, not run now): caption bias %s", sorted(others))
    spaces = dict(sorted({**spaces, **others}.items()))
    meta = {
        "biases": biases,
        "summarised_only": sorted(others),
        "profile": profile,
        "overrides": list(overrides or []),
        "wall_s": time.time() - t0,
    }
    summary = write_study(base, spaces, base / out, meta, n_boot=n_boot)
    logger.info("study written: metrics/study.json, %s", base / out / "report.md")
    return summary


if __name__ == "__main__":
    study()
