"""Workspaces: a copy of this checkout where a variant of the pipeline runs as its own DVC
project (the study runs one per caption-bias value), and params overlays.

A workspace holds the checkout's tracked and unignored files (code, dvc.yaml, .dvc/config),
never its outputs, as a git repository of its own (DVC needs one); rerunning refreshes the
code and params and commits them, so DVC reruns exactly what changed (the way `dvc exp run`
uses a copy of the workspace, kept here so the outputs stay inspectable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

# the pipeline's recorded outputs and local state: never copied into a workspace
NOT_COPIED = ("metrics/", "plots/", "dvc.lock", "eval/", "docs/", "studies/", "reports/")
REPLACED = ("arms",)  # overlay keys that replace params.yaml's instead of merging into it


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in section by section, key by key; lists and the keys in
    REPLACED (an arm set is one choice) are replaced whole."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED:
            out[key] = overlay(out[key], value)
        else:
            out[key] = value
    return out


def _git(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "mmrpt",
        "GIT_AUTHOR_EMAIL": "mmrpt@localhost",
        "GIT_COMMITTER_NAME": "mmrpt",
        "GIT_COMMITTER_EMAIL": "mmrpt@localhost",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout


def checkout_copy(src: str | Path, dst: str | Path, params: dict[str, Any]) -> Path:
    """Make or refresh the workspace ``dst`` from the checkout ``src`` with ``params`` as its
    params.yaml; returns ``dst``."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if (
        dst.is_relative_to(src)
        and not (dst / ".git").exists()
        and dst.exists()
        and any(dst.iterdir())
    ):
        raise FileExistsError(f"{dst}: not empty and not a workspace of this project")
    files = _git(["ls-files", "-co", "--exclude-standard"], src).split("\n")
    for f in filter(None, files):
        if (src / f).is_file() and not f.startswith(NOT_COPIED) and f != "params.yaml":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, dst / f)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (dst / ".git").exists():
        _git(["init", "-q"], dst)
    _git(["add", "-A"], dst)
    if _git(["status", "--porcelain"], dst).strip():
        _git(["commit", "-qm", "workspace: code and params from the checkout"], dst)
    return dst
