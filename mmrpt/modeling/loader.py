"""The one way models are loaded: any Hugging Face VLM folder or hub id, tiny or real.

The embedded tiny model and e.g. Qwen/Qwen2.5-VL-3B-Instruct take the same path. Loading is
safe by default: safetensors only, no remote code unless the caller asks for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin


class CheckpointError(RuntimeError):
    """A model folder that cannot be loaded, with the reason."""


MODEL_REF = "model_ref.json"


def write_model_ref(folder: str | os.PathLike, target: str) -> Path:
    """A model folder that stands for another model (a local folder or hub id): the warmup
    output when warmup is off. ``load_vlm`` follows it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_REF).write_text(json.dumps({"path": str(target)}) + "\n")
    return folder


def resolve_model_path(path: str | os.PathLike) -> str:
    """``path``, or the model a reference folder (write_model_ref) stands for."""
    ref = Path(path) / MODEL_REF
    if ref.is_file():
        return str(json.loads(ref.read_text())["path"])
    return str(path)


def load_processor(path: str | os.PathLike, trust_remote_code: bool = False) -> ProcessorMixin:
    processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    # AutoProcessor silently falls back to a bare tokenizer when it cannot build the full one.
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise CheckpointError(
            f"{path}: AutoProcessor gave {type(processor).__name__}, not a "
            "multimodal processor (missing preprocessor_config.json?)"
        )
    return processor


def load_vlm(
    path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
):
    """Load (model, processor) from a local HF folder or a hub id (or a reference to one)."""
    path = resolve_model_path(path)
    p = Path(path)
    if p.exists() and p.is_dir() and not any(p.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            attn_implementation=attn_implementation,
            dtype=dtype,
        )
    except Exception as e:  # safetensors, json and config errors all mean: unreadable
        raise CheckpointError(f"cannot load model from {path}: {e}") from e
    try:
        processor = load_processor(path, trust_remote_code)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot load processor from {path}: {e}") from e
    return model.to(device), processor


def image_token_id(model) -> int:
    tid = getattr(model.config, "image_token_id", None)
    if tid is None:
        tid = getattr(model.config, "image_token_index", None)
    if tid is None:
        raise CheckpointError(f"{type(model).__name__}: config names no image_token_id")
    return int(tid)


class LoadsCheckpointsByFromPretrained:
    """Trainer mixin whose resume really restores the weights.

    transformers 5.24's Trainer._load_from_checkpoint calls model.load_state_dict(strict=False)
    on the raw checkpoint file, but Qwen2-VL checkpoints are saved with legacy key names
    ("model.layers.*", not "model.language_model.layers.*"): nothing matches, nothing loads, and
    a resumed run silently continues from the initial weights (found by the kill/resume test).
    We load through from_pretrained, which converts the keys, and insist on a full match.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        if hasattr(model, "peft_config"):  # LoRA: the checkpoint holds adapters, by peft name
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(
            resume_from_checkpoint, dtype=model.dtype, use_safetensors=True
        )
        model.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
