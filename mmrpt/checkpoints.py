"""Which checkpoints a resume may load: only complete ones this workspace wrote.

A resume unpickles: transformers' Trainer loads rng_state.pth, optimizer.pt, scheduler.pt
(torch.load with weights_only=True: a restricted unpickler) and DeepSpeed loads
``global_step*/mp_rank_*_model_states.pt`` and its optimizer states with
``torch.load(weights_only=False)``: full unpickling, i.e. arbitrary code. Checkpoint folders
can arrive from a DVC remote, a shared disk or an earlier crash, so the folder itself proves
nothing (whoever wrote it could also write a manifest beside it).

The record lives outside the artifact: after every save (``RecordsCheckpoints``, a Trainer
callback) the sha256 of every file of ``checkpoint-N`` is written to this workspace's state
(``.mmrpt/trust/<hash of the folder's path in the workspace>.json``; git-ignored, never a DVC
output). A resume
(``resume_point``) loads the newest checkpoint whose files match their record exactly (same
names, same hashes, no symlinks, nothing added). The record is written only after the
Trainer's save returned, so it is also the completion marker: a checkpoint cut short by a kill
or a full disk has none. Newer checkpoints that fail the check (partial, foreign, changed) are
removed with a warning naming the reason, and training resumes from the last good one, or
starts over: nothing in them is ever opened. The folder holding them must be the project's
(mmrpt.safety). Hashing costs one read of each checkpoint per save and per resume (sha256,
~1-2 GB/s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

from transformers import TrainerCallback

from mmrpt.safety import STATE_DIR, remove_owned

log = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _where(folder: Path) -> str:
    """The folder as the record names it: relative to the workspace when inside it (a copy or
    move of the whole workspace, .mmrpt included, keeps its records valid), else absolute."""
    real, root = os.path.realpath(folder), os.path.realpath(".")
    return os.path.relpath(real, root) if Path(root) in Path(real).parents else real


def _record_path(folder: Path) -> Path:
    key = hashlib.sha256(_where(folder).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return Path(STATE_DIR).resolve() / "trust" / f"{key}.json"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_hashes(folder: Path) -> tuple[dict[str, str], list[str]]:
    """({relative path: sha256} of every regular file under ``folder``, [symlinks and other
    non-regular entries]); nothing is followed through a link."""
    files, odd = {}, []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                odd.append(rel)
            elif p.is_file():
                files[rel] = sha256_file(p)
    return files, sorted(odd)


def record(folder: str | os.PathLike) -> Path:
    """Record ``folder`` (a complete checkpoint) as written by this workspace."""
    folder = Path(folder)
    files, odd = folder_hashes(folder)
    if odd:
        raise RuntimeError(f"{folder}: links or special files in a checkpoint: {odd}")
    path = _record_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"path": _where(folder), "files": files}, indent=1))
    os.replace(tmp, path)
    return path


def forget(folder: str | os.PathLike) -> None:
    _record_path(Path(folder)).unlink(missing_ok=True)


def problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` may not be loaded (None: it is complete and exactly as this workspace
    wrote it)."""
    folder = Path(folder)
    try:
        rec = json.loads(_record_path(folder).read_text())
        expected = dict(rec["files"])
    except FileNotFoundError:
        return "no record that this workspace finished writing it (a save cut short, or a copy)"
    except (ValueError, KeyError, TypeError):
        return "its record in .mmrpt/trust is unreadable"
    files, odd = folder_hashes(folder)
    if odd:
        return f"links or special files in it: {', '.join(odd[:3])}"
    for name in sorted(expected.keys() | files.keys()):
        if name not in files:
            return f"{name} is missing"
        if name not in expected:
            return f"{name} was not written by this workspace"
        if files[name] != expected[name]:
            return f"{name} changed after it was written"
    return None


def checkpoints(folder: Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, newest (highest N) first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def resume_point(folder: str | os.PathLike, prune: bool = True) -> Path | None:
    """The newest checkpoint in ``folder`` that is complete and as this workspace wrote it
    (None: start over). With ``prune``, newer checkpoints that fail the check are removed
    (a Trainer would otherwise save into them and keep what they hold); each is logged with
    its reason."""
    for ckpt in checkpoints(Path(folder)):
        why = problem(ckpt)
        if why is None:
            return ckpt
        log.warning("%s: not loaded (%s)%s", ckpt, why, "; removed" if prune else "")
        if prune:
            remove_owned(ckpt)
            forget(ckpt)
    return None


class RecordsCheckpoints(TrainerCallback):
    """After each checkpoint save, record its files (on the main process, once every process
    has written its part)."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            record(Path(args.output_dir) / f"checkpoint-{state.global_step}")
