"""Small helpers shared by the stage entry points (not by components): the replicate seed
and the checks every stage makes before any compute (a missing split, probe or file is one
clear ParamsError naming the param to set; the CLI exits 2 on it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mmrpt import distributed
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.distributed import record_launch, resume_conflict
from mmrpt.io import fingerprint_dir

if TYPE_CHECKING:  # torch and transformers load in the stages that train (~10 s of start-up)
    from mmrpt.training import TrainOptions

log = logging.getLogger(__name__)


def run_seed(ctx: StageContext) -> int:
    """The training seed of one arm replicate (its seed) under the pipeline seed."""
    return ctx.params.seed + 7919 * ctx.seed


def data_splits(root: Path) -> list[str]:
    """The splits the data stage wrote (its ``<split>.jsonl`` manifests)."""
    return sorted(p.stem for p in Path(root).glob("*.jsonl") if p.name != "rejects.jsonl")


def require_splits(root: Path, key: str, splits: Iterable[str | None]) -> None:
    """Every named split has a manifest in ``root``, else a ParamsError naming ``key``."""
    if not Path(root).is_dir():
        raise ParamsError(f"{root}: no data; run the data stage first")
    have = data_splits(root)
    missing = [s for s in splits if s is not None and s not in have]
    if missing:
        raise ParamsError(
            f"{key}: split(s) {missing} not in the data ({root} has {have}); set {key} to "
            "splits that data.inputs provides (null: derived from data.inputs)"
        )


def has_labels(root: Path, split: str) -> bool:
    """Does any sentence of ``split`` carry a ground-truth label (the world's do; real data's
    do not)? Reads the manifest up to the first labelled sentence."""
    with open(Path(root) / f"{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip() and any(
                s.get("label") is not None for s in json.loads(line)["sentences"]
            ):
                return True
    return False


def require_file(path: Path, key: str, what: str) -> None:
    if not Path(path).exists():
        raise ParamsError(f"{key}: {what} {path} does not exist")


def require_masks(masks: Path, selector: str, wanted: dict[str, Iterable[str | None]]) -> None:
    """The mask stage wrote ``<masks>/<selector>/<split>.jsonl`` for every split named in
    ``wanted`` ({param key: splits}), else a ParamsError naming the key."""
    for key, splits in wanted.items():
        if key != "mask.splits" and not list(splits):
            raise ParamsError(f"{key}: no split to evaluate on; data.inputs needs a held-out split")
        missing = [s for s in splits if s is None or not (masks / selector / f"{s}.jsonl").exists()]
        if missing:
            raise ParamsError(
                f"{key}: no masked samples of split(s) {missing} in {masks / selector} "
                f"(add them to mask.splits, or run the mask stage)"
            )


def warn_untracked(key: str, paths: Iterable[str], folder: str) -> None:
    """Log when a real input lies outside the stage's declared input folder (mmrpt.pipeline
    INPUTS): DVC will not rerun the stage when that file changes."""
    root = Path(folder).resolve()
    outside = [p for p in paths if root not in Path(p).resolve().parents]
    if outside:
        log.warning(
            "%s: %s not under %s/: DVC does not rerun this stage when they change (move them "
            "there and `dvc add` them; README, Real data)",
            key,
            outside[:3],
            folder,
        )


def train_options(ctx: StageContext) -> TrainOptions:
    """The launch section as the trainers take it (this process's run: its world size)."""
    import torch

    from mmrpt.training import LoraSpec, TrainOptions

    lp = ctx.params.launch
    lora = lp.lora.model_dump()
    precision = lp.precision
    return TrainOptions(
        world_size=distributed.world_size(),
        deepspeed=lp.deepspeed,
        bf16=precision == "bf16" or (precision == "auto" and torch.cuda.is_available()),
        gradient_checkpointing=lp.gradient_checkpointing,
        lora=LoraSpec(**lora) if lora["r"] else None,
        backend=distributed.resolve_backend(lp.backend),
    )


def work_dir(path: Path, fingerprint: str) -> Path:
    """mmrpt.io.fingerprint_dir by the main process (it may empty the folder), then all."""
    if distributed.is_main():
        fingerprint_dir(path, fingerprint)
    distributed.barrier()
    return Path(path)


def checkpoint_dir(ctx: StageContext, options: TrainOptions) -> Path:
    """The stage's resumable checkpoint folder (out ``checkpoints``), checked for a resume at
    this world size (mmrpt.training.resume_conflict)."""
    ckpt = work_dir(ctx.out("checkpoints"), ctx.fingerprint())
    conflict = resume_conflict(ckpt, options.world_size, options.deepspeed)
    if conflict:
        raise ParamsError(conflict)
    record_launch(ckpt, options.world_size, options.deepspeed)
    return ckpt
