"""Small helpers shared by the stage entry points (not by components)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


def write_json_atomic(path: str | Path, obj: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_csv_atomic(path: str | Path, rows: list[dict], columns: list[str] | None = None
                     ) -> Path:
    """``columns``: the header to write when ``rows`` is empty (else taken from the rows)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pd.DataFrame(rows, columns=None if rows else columns).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_metrics(stage: str, metrics: dict) -> Path:
    return write_json_atomic(METRICS_DIR / f"{stage}.json", metrics)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_seed(params) -> int:
    """The training seed of one arm replicate (rl.seed) under the pipeline seed."""
    return params.seed + 7919 * params.rl.seed


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trained_model_path(params) -> str:
    """The model later stages start from: the warmup output, or model.path if warmup is off."""
    return params.warmup.out_dir if params.warmup.enabled else params.model.path


def fingerprint_dir(path: Path, fingerprint: str) -> Path:
    """Keep a resumable work folder only if it was made with the same fingerprint."""
    import shutil

    stamp = path / "fingerprint.txt"
    if path.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return path


def weights_stamp(folder: Path) -> list:
    """Cheap identity of a model folder's weights (name, size, mtime), for fingerprints."""
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(folder.glob("*.safetensors"))]


def params_hash(*sections) -> str:
    import hashlib

    blob = json.dumps([s.model_dump() if hasattr(s, "model_dump") else s for s in sections],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_resumable(trainer, ckpt: Path) -> None:
    """Train, resuming from the last checkpoint in ``ckpt`` if there is one.

    A last checkpoint at max_steps (the run was killed after training, e.g. during its
    evaluation) is only loaded, weights and state: Trainer.train would run one step past
    max_steps from it, so the rerun would differ from an uninterrupted run.
    """
    import logging

    from transformers import TrainerState
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt))
    if last:
        logging.getLogger(__name__).info("resuming from %s", last)
        state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
        if state.global_step >= trainer.args.max_steps and not trainer.is_deepspeed_enabled:
            trainer._load_from_checkpoint(last)
            trainer.state = state
            return
    trainer.train(resume_from_checkpoint=last)


def save_model_atomic(model, processor, out: str | Path) -> Path:
    """save_pretrained to a temp folder, then rename: never a half-written model folder."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def save_trained(trainer, processor, out: str | Path) -> Path | None:
    """Save the trained model (gathering ZeRO-3 shards if any) to a temp folder, then rename
    it into place on the main process. Returns the folder on the main process, else None."""
    import shutil

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if trainer.is_world_process_zero():
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not trainer.is_world_process_zero():
        return None
    processor.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out
