"""The one schema for params.yaml: every stage reads its section through it.

Frozen pydantic models with extra="forbid": a typo or an impossible value fails at load time
with a message naming the key. Stage entry points turn a section into plain arguments for the
components; components never see this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

STAGES = ("data", "warmup")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    source: Literal["synthetic", "jsonl", "parquet", "webdataset"] = "synthetic"
    # Real sources: {split name: path, glob or list of paths}; must include "train".
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    out_dir: str = "data/world"
    image_size: int = Field(112, ge=28, le=4096)
    max_objects: int = Field(3, ge=1, le=9)
    prior_strength: float = Field(0.7, ge=0.0, le=1.0)
    n_train: int = Field(3000, ge=1)
    n_dev: int = Field(300, ge=1)
    n_test: int = Field(300, ge=1)
    min_sentences: int = Field(2, ge=1)
    max_image_pixels: int = Field(4096 * 4096, ge=1)

    @model_validator(mode="after")
    def _inputs(self) -> DataParams:
        if self.source == "synthetic" and self.inputs:
            raise ValueError("data.inputs is only for real sources (data.source != synthetic)")
        if self.source != "synthetic" and "train" not in self.inputs:
            raise ValueError(f"data.inputs must name a 'train' split for source={self.source}")
        if self.image_size % 28:
            raise ValueError("data.image_size must be a multiple of 28 (patch 14 x merge 2)")
        return self


class TinyModelParams(Section):
    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(128, ge=16)
    intermediate_size: int = Field(384, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    vision_depth: int = Field(2, ge=1)
    vision_embed_dim: int = Field(64, ge=8)
    vision_heads: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> TinyModelParams:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError("model.tiny.hidden_size / num_heads must be an even integer")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("model.tiny.num_heads must be a multiple of num_kv_heads")
        if self.vision_embed_dim % self.vision_heads:
            raise ValueError("model.tiny.vision_embed_dim must be a multiple of vision_heads")
        return self


class ModelParams(Section):
    # A local HF folder or hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct); null builds the tiny VLM.
    path: str | None = None
    trust_remote_code: bool = False
    tiny: TinyModelParams = TinyModelParams()


class WarmupParams(Section):
    enabled: bool = True
    out_dir: str = "models/warmup"
    checkpoint_dir: str = "checkpoints/warmup"
    prompt: str = "Describe the image."
    max_steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    save_steps: int = Field(250, ge=1)
    save_total_limit: int = Field(2, ge=1)
    log_steps: int = Field(25, ge=1)
    eval_split: str = "test_iid"
    eval_samples: int = Field(300, ge=2)
    num_threads: int = Field(0, ge=0)  # 0 = torch default


class TrackingParams(Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "mmrpt"


class Params(Section):
    seed: int = 0
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    warmup: WarmupParams = WarmupParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="after")
    def _cross(self) -> Params:
        if self.model.path is None and not self.warmup.enabled:
            raise ValueError("warmup.enabled=false needs model.path (the tiny model starts "
                             "untrained and must be warmed up)")
        return self


class ParamsError(ValueError):
    """params.yaml or an override is invalid; the message names each bad key."""


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {key}: {e['msg']}")
    return "invalid params:\n" + "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'warmup.lr=1e-3' -> (['warmup', 'lr'], 0.001); the value is parsed as YAML."""
    if "=" not in item:
        raise ParamsError(f"override {item!r} is not key=value")
    key, value = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
    for key, value in items:
        path = key.split(".") if isinstance(key, str) else key
        node = raw
        for k in path[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {'.'.join(path)}: {k} is not a section")
        node[path[-1]] = value
    return raw


def load_params(path: str | os.PathLike = "params.yaml",
                overrides: list[str] | dict[str, Any] | None = None) -> Params:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(_format(e)) from None
