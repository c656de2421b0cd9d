"""The one way models are loaded: a Hugging Face folder or hub id, tiny or real.

The embedded tiny model and e.g. Qwen/Qwen2.5-VL-3B-Instruct take the same path. Loading is
safe by default: safetensors only, no remote code unless the caller asks for it.

Supported family: Qwen2-VL and Qwen2.5-VL (model_type qwen2_vl / qwen2_5_vl). The pipeline
uses their API throughout (image_grid_thw, get_rope_index, mm_token_type_ids, the
<|im_end|> turn end); any other model_type is refused on load, before the weights are read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin

from mmrpt.modeling import CheckpointError

MODEL_REF = "model_ref.json"
SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


def write_model_ref(
    folder: str | os.PathLike,
    target: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Path:
    """A model folder that stands for another model (a local folder or hub id): the warmup
    output when warmup is off. ``load_vlm`` follows it (with the processor's pixel bounds)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ref = {"path": str(target), "min_pixels": min_pixels, "max_pixels": max_pixels}
    (folder / MODEL_REF).write_text(json.dumps(ref) + "\n")
    return folder


def _model_ref(path: str | os.PathLike) -> dict:
    ref = Path(path) / MODEL_REF
    return json.loads(ref.read_text()) if ref.is_file() else {"path": str(path)}


def resolve_model_path(path: str | os.PathLike) -> str:
    """``path``, or the model a reference folder (write_model_ref) stands for."""
    return str(_model_ref(path)["path"])


def check_family(path: str | os.PathLike, trust_remote_code: bool = False) -> str:
    """The model_type of ``path``'s config, if it is a supported one; else CheckpointError."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise CheckpointError(f"cannot load model config from {path}: {e}") from e
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{path}: model_type {config.model_type!r} is not supported; this pipeline runs the "
            f"Qwen2-VL / Qwen2.5-VL family ({', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return config.model_type


def set_pixels(processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Bound the processor's resized image area (Qwen2-VL: size shortest_edge / longest_edge
    are the min / max pixel counts); None keeps the processor's own bound."""
    size = {k: v for k, v in dict(processor.image_processor.size).items() if v is not None}
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels {size['shortest_edge']} > max_pixels {size['longest_edge']}")
    processor.image_processor.size = size


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
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Load (model, processor) from a local HF folder or a hub id (or a reference to one);
    ``min_pixels`` / ``max_pixels`` (else a reference's) bound the processor's image size."""
    ref = _model_ref(path)
    path = str(ref["path"])
    min_pixels = min_pixels if min_pixels is not None else ref.get("min_pixels")
    max_pixels = max_pixels if max_pixels is not None else ref.get("max_pixels")
    p = Path(path)
    if p.exists() and p.is_dir() and not any(p.glob("*.safetensors")):
        raise CheckpointError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
    check_family(path, trust_remote_code)
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
    bad = nonfinite_parameters(model)
    if bad:  # a diverged run's output: every later number would be garbage
        raise CheckpointError(
            f"{path}: non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]}: "
            "the run that wrote it diverged; retrain it"
        )
    try:
        processor = load_processor(path, trust_remote_code)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot load processor from {path}: {e}") from e
    set_pixels(processor, min_pixels, max_pixels)
    settle_tokenizer(processor)
    return model.to(device), processor


def settle_tokenizer(processor) -> None:
    """Clear the padding and truncation that a batched tokenizer call leaves set on a fast
    tokenizer's backend: save_pretrained writes that state into tokenizer.json, so a model
    saved after generating (left padding) differed byte for byte from the same model saved by
    a resumed run that had not generated yet (docs/LOG.md). Every call passes its own padding
    and truncation, so nothing else depends on it."""
    backend = getattr(getattr(processor, "tokenizer", processor), "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()


def nonfinite_parameters(model) -> list[str]:
    """Names of the parameters holding a NaN or an infinity."""
    with torch.no_grad():
        return [
            name
            for name, p in model.named_parameters()
            if p.numel() and not bool(torch.isfinite(p).all())
        ]


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
