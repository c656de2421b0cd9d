"""The one schema for params.yaml: every stage reads its section through it.

Frozen pydantic models with extra="forbid": a typo or an impossible value fails at load time
with a message naming the key. Stage entry points turn a section into plain arguments for the
components; components never see this module.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mmrpt.safety import PROJECT_FILES, SOURCE, path_conflicts, text_problem

REWARD_TERMS = ("format", "exact", "prefix", "semantic", "visual")


class Section(BaseModel):
    # NaN and infinity are refused for every float (they pass `ge`/`le` checks otherwise)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _plain_text(value: str) -> str:
    """A prompt or instruction: never a special (control) token, always Unicode."""
    problem = text_problem(value, what="text")
    if problem:
        raise ValueError(problem)
    return value


class DataParams(Section):
    source: Literal["synthetic", "jsonl", "parquet", "webdataset"] = "synthetic"
    # Real sources: {split name: path, glob or list of paths}; must include "train".
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)
    out_dir: str = "data/world"
    image_size: int = Field(168, ge=28, le=4096)
    max_objects: int = Field(3, ge=1, le=9)
    prior_strength: float = Field(0.7, ge=0.0, le=1.0)
    # P(a train caption names an object's prior colour when the image shows another): the
    # descriptive bias of real captions (the study's knob; 0 = captions true to the image)
    caption_bias: float = Field(0.0, ge=0.0, le=1.0)
    # held-out probes: one colour question per object (not one per scene): more
    # prior-conflict probes per scene for the study
    probe_colour_all: bool = False
    n_train: int = Field(3000, ge=1)
    n_dev: int = Field(300, ge=1)
    n_test: int = Field(300, ge=1)
    min_sentences: int = Field(2, ge=1)
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    # real sources: images with a side shorter than this are refused at ingest (28 = one
    # Qwen2-VL image token; the processor would upscale them). Aspect ratios over 200, which
    # the processor refuses, are always refused.
    min_image_side: int = Field(1, ge=1)
    # real sources: longer captions are rejected with a reason (a 200,000-character caption
    # would need a 13 GB attention matrix in warmup)
    max_caption_chars: int = Field(4000, ge=1, le=1_000_000)

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
    # Supported family: Qwen2-VL / Qwen2.5-VL (checked on load).
    path: str | None = None
    trust_remote_code: bool = False
    # Bounds on the processor's image size in pixels (Qwen2-VL processors: min_pixels /
    # max_pixels; one image token per 28x28 pixels). null: the processor's own (Qwen's default
    # max is 12.8 MP, ~16k tokens). Set by warmup on the saved processor every stage loads.
    min_pixels: int | None = Field(None, ge=28 * 28)
    max_pixels: int | None = Field(None, ge=28 * 28)
    tiny: TinyModelParams = TinyModelParams()

    @model_validator(mode="after")
    def _pixels(self) -> ModelParams:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("model.min_pixels must be <= model.max_pixels")
        return self


class WarmupParams(Section):
    enabled: bool = True
    out_dir: str = "models/warmup"
    checkpoint_dir: str = "checkpoints/warmup"
    prompt: str = "Describe the image."
    max_steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0, le=1.0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    save_steps: int = Field(250, ge=1)
    save_total_limit: int = Field(2, ge=1)
    log_steps: int = Field(25, ge=1)
    eval_split: str | None = None  # null: the data's first held-out split (world: test_iid)
    eval_samples: int = Field(300, ge=2)
    num_threads: int = Field(0, ge=0)  # 0 = torch default

    _prompt = field_validator("prompt")(_plain_text)


class ScoreParams(Section):
    out_dir: str = "data/scores"
    splits: list[str] | None = None  # null: every split of the data
    # dev: the top_heads (layer, head) pairs by AUROC on diagnostic_split (our choice);
    # band: the paper's upper-middle layers (layers, or the layer_band of the depth), heads.
    select: Literal["dev", "band"] = "dev"
    # null: as many of the best heads (1..max_top_heads, in dev-AUROC order) as maximise the
    # dev AUROC of their averaged score (our choice; docs/LOG.md)
    top_heads: int | None = Field(None, ge=1)
    max_top_heads: int = Field(8, ge=1)
    layers: list[int] | None = None
    layer_band: tuple[float, float] = (0.5, 0.75)
    heads: list[int] | None = None  # null = all heads, averaged
    # Which non-image keys count as "text" in D_vis's denominator: sink (position 0),
    # prompt (system prompt, chat template, instruction), caption.
    text_keys: list[Literal["sink", "prompt", "caption"]] = ["caption"]
    counterfactual: bool = True
    # the counterfactual score on the train split too (needed only when a mask selector
    # uses it; the AUROC report needs the held-out splits only)
    counterfactual_train: bool = False
    replacements: int = Field(5, ge=1, le=16)
    # how the loss rises over replacements combine (dev split: max beats mean, docs/LOG.md)
    counterfactual_reduce: Literal["mean", "max"] = "max"
    batch_size: int = Field(32, ge=1)
    shard_size: int = Field(512, ge=1)
    # The workers that score the corpus: one DVC stage score@<w> per entry (0..W-1), each on
    # the shards k with k % W == w (and each of its launch.num_processes ranks on a share of
    # those); score_merge joins them. [0, 1]: two workers (two machines, or two processes).
    workers: list[int] = Field([0], min_length=1, max_length=1024)
    # all-layer AUROC here (choose layers on it); null: the first split besides train
    diagnostic_split: str | None = None
    # AUROC reported in metrics/score.json; null: the second split besides train. AUROC is
    # computed only where the split has ground-truth labels (real data has none).
    report_split: str | None = None
    diagnostic_samples: int = Field(300, ge=1)

    @model_validator(mode="after")
    def _band(self) -> ScoreParams:
        lo, hi = self.layer_band
        if not 0 <= lo < hi <= 1:
            raise ValueError("score.layer_band must be [lo, hi] with 0 <= lo < hi <= 1")
        if not self.text_keys:
            raise ValueError("score.text_keys must name at least one key role")
        if self.workers != list(range(len(self.workers))):
            raise ValueError("score.workers must be [0, 1, ..., W-1] (one entry per worker)")
        if self.diagnostic_split is not None and self.diagnostic_split == self.report_split:
            raise ValueError(
                "score.diagnostic_split must differ from score.report_split "
                "(layers are chosen on the diagnostic split)"
            )
        return self


class MaskParams(Section):
    out_dir: str = "data/masked"
    # The first selector's masks feed the mmrpt and masked_sft arms (and the primer); "random"
    # feeds the random_mask arm. Each writes <out_dir>/<selector>/<split>.jsonl.
    selectors: list[Literal["attention", "counterfactual", "random", "label"]] = [
        "attention",
        "random",
    ]
    threshold: Literal["mean_std", "quantile"] = "mean_std"
    k: float = Field(0.5, ge=-10.0, le=10.0)  # tau = per-caption mean + k * std
    quantile: float = Field(0.6, gt=0, lt=1)  # tau = corpus quantile of the scores
    # sentence: whole sentences; span: the most visually attended word of each; attribute: the
    # colour word of object sentences (the synthetic world's grammar: the attribute its
    # captions can misdescribe; only object sentences are candidates)
    granularity: Literal["sentence", "span", "attribute"] = "sentence"
    # attribute masks: also hide, with the same blank, every other mention of the hidden colour
    # with the same shape ("The [1] circle is left of ..."). Without it the answer is in the
    # caption's own text for ~60% of the world's samples, so imitation can learn to copy it
    # instead of the caption's bias (docs/LOG.md, 2026-12-02 session 3)
    hide_mentions: bool = False
    max_masks: int = Field(2, ge=1)
    # the answer format: <think>...</think><answer>...</answer>, or the answer alone (short
    # completions; say so in the instruction)
    think: bool = True
    splits: list[str] | None = None  # null: every split of the data
    instruction: str = (
        "Fill in each numbered blank of the caption using the image. "
        "Think in <think></think>, then write <answer>[1] ... [2] ...</answer>."
    )
    gallery_samples: int = Field(24, ge=0)

    _instruction = field_validator("instruction")(_plain_text)

    @model_validator(mode="after")
    def _mentions(self) -> MaskParams:
        if self.hide_mentions and self.granularity != "attribute":
            raise ValueError("mask.hide_mentions needs mask.granularity: attribute")
        return self


class PrimerParams(Section):
    """The short supervised fill-in primer every arm starts from (RL cannot discover a format
    the model has never seen). Uses the first n_samples masked train samples; the arms use the
    rest, so primer and RL data are disjoint."""

    out_dir: str = "models/primer"
    checkpoint_dir: str = "checkpoints/primer"
    n_samples: int = Field(600, ge=1)
    max_steps: int = Field(150, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0, le=1.0)
    save_steps: int = Field(50, ge=1)
    eval_split: str | None = None  # null: the data's first held-out split (world: test_iid)
    eval_samples: int = Field(200, ge=1)
    max_new_tokens: int = Field(96, ge=8)


class RLParams(Section):
    """What every arm shares (one run = one arm of `arms` x one seed of `seeds`)."""

    out_dir: str = "models/rl"  # per run: <out_dir>/<arm>-<seed>
    checkpoint_dir: str = "checkpoints/rl"
    steps: int = Field(150, ge=1)  # optimizer steps, the same for every arm
    batch_size: int = Field(8, ge=1)  # prompts (samples) per step, the same for every arm
    num_generations: int = Field(4, ge=2)  # GRPO group size
    temperature: float = Field(0.8, gt=0, le=10.0)
    lr: float = Field(1e-4, gt=0, le=1.0)
    sft_lr: float = Field(1e-3, gt=0, le=1.0)  # ntp / masked_sft arms
    beta: float = Field(0.0, ge=0, le=10.0)  # KL coefficient (RPT: 0)
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    max_completion_length: int = Field(64, ge=8)
    reward_weights: dict[str, float] = {
        "format": 0.2,
        "exact": 1.0,
        "prefix": 0.5,
        "semantic": 0.1,
        "visual": 0.2,
    }
    save_steps: int = Field(50, ge=1)
    log_completions_steps: int = Field(50, ge=0)  # completions table to MLflow; 0 = off
    # GRPO: a step's rollouts are generated at once and trained on in this many
    # gradient-accumulation slices (memory: rollouts per forward = batch x G / (N x this))
    micro_batches: int = Field(1, ge=1)
    # GRPO rollouts through TRL's vLLM integration (colocated in each training process; needs
    # CUDA and the `vllm` extra); vllm_memory: the GPU memory share vLLM may take
    vllm: bool = False
    vllm_memory: float = Field(0.3, gt=0, lt=1)
    eval_splits: list[str] | None = None  # null: the held-out splits (all but train; world:
    #   test_iid, test_counter)
    eval_samples: int = Field(200, ge=1)
    # Image-text similarity model (CLIP / SigLIP folder or hub id) for the reward's visual term
    # where a sample has no scene to verify against (real data); null: exact match there.
    visual_model: str | None = None

    @model_validator(mode="after")
    def _rewards(self) -> RLParams:
        _check_rewards(self.reward_weights, "rl.reward_weights")
        return self


class ArmParams(Section):
    """One arm of the comparison: an objective on masked samples from the shared primer.
    ntp: caption next-token prediction on the samples' captions; sft: supervised fill-in
    (imitation); grpo: GRPO with the reward; rft: rejection-sampling fine-tuning (supervised
    fill-in on the primer's own completions that the reward fully accepts); an ablation is
    another entry in `arms`."""

    objective: Literal["ntp", "sft", "grpo", "rft"]
    # whose masks: "primary" (mask.selectors[0]) or a selector named in mask.selectors
    masks: str = "primary"
    # null: rl.lr (grpo), rl.sft_lr (ntp, sft, rft)
    lr: float | None = Field(None, gt=0, le=1.0)
    # grpo: the reward; rft: the acceptance test (every term of weight > 0 gives full credit);
    # null: rl.reward_weights
    reward_weights: dict[str, float] | None = None

    @model_validator(mode="after")
    def _arm(self) -> ArmParams:
        if self.reward_weights is not None:
            if self.objective not in ("grpo", "rft"):
                raise ValueError("reward_weights only apply to objectives grpo and rft")
            _check_rewards(self.reward_weights, "reward_weights")
        return self


def _check_rewards(weights: dict[str, float], key: str) -> None:
    unknown = set(weights) - set(REWARD_TERMS)
    if unknown:
        raise ValueError(f"{key}: unknown terms {sorted(unknown)}; known: {list(REWARD_TERMS)}")
    if any(not 0 <= w <= 100 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"{key}: weights must be in [0, 100] with at least one > 0")


DEFAULT_ARMS = {
    "ntp": ArmParams(objective="ntp"),
    "masked_sft": ArmParams(objective="sft"),
    "random_mask": ArmParams(objective="grpo", masks="random"),
    "mmrpt": ArmParams(objective="grpo"),
}


class SFTParams(Section):
    """Supervised fine-tuning, the same for every arm, on a downstream VQA set (TRL
    SFTTrainer). probes: the synthetic world's train-split probes (question -> answer);
    llava: LLaVA-style JSON conversations from a local file."""

    source: Literal["probes", "llava"] = "probes"
    inputs: str | None = None  # llava: path to the JSON (list of {image, conversations})
    image_root: str | None = None  # llava: images are relative to this (default: the JSON's dir)
    out_dir: str = "models/sft"  # per run: <out_dir>/<arm>-<seed>
    checkpoint_dir: str = "checkpoints/sft"
    steps: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0, le=1.0)
    save_steps: int = Field(50, ge=1)
    max_length: int | None = Field(None, ge=16)  # never truncates image tokens (None = off)
    # snapshots of the model after these many steps (< steps), evaluated like the final one:
    # the curve of accuracy vs SFT budget (the final model is the budget `steps`)
    budgets: list[int] = []
    # llava: conversations with more text than this, or images with more pixels, are refused
    max_text_chars: int = Field(20000, ge=1, le=1_000_000)
    max_image_pixels: int = Field(4096 * 4096, ge=1)

    @model_validator(mode="after")
    def _source(self) -> SFTParams:
        if self.source == "llava" and not self.inputs:
            raise ValueError("sft.inputs must name the LLaVA-style JSON file for source=llava")
        if self.source == "probes" and self.inputs:
            raise ValueError("sft.inputs is only for source=llava")
        if any(not 0 < b < self.steps for b in self.budgets) or len(set(self.budgets)) != len(
            self.budgets
        ):
            raise ValueError(f"sft.budgets must be distinct steps in 1..{self.steps - 1}")
        return self


class EvalParams(Section):
    """Zero-shot (the rl output) and after-SFT evaluation of each run."""

    out_dir: str = "eval"  # lm-eval / VLMEvalKit output files per run and model
    splits: list[str] | None = None  # null: the held-out splits (world: test_iid, test_counter)
    limit: int | None = Field(None, ge=1)  # probes per (split, probe type) (None = all)
    harnesses: list[Literal["lmeval", "vlmevalkit"]] = ["lmeval", "vlmevalkit"]
    blank: bool = True  # also score every probe with the image blanked (vision reliance)
    # Real benchmark names passed straight to VLMEvalKit (MMBench_DEV_EN, MMStar, BLINK, ...;
    # they download their data: not for the embedded default or machines without internet).
    vlmevalkit_datasets: list[str] = []
    # Where the benchmark TSVs live (VLMEvalKit's $LMUData); null: $LMUData of the environment.
    # The project's own probe TSVs never go there (they go to the run's eval folder).
    benchmarks_dir: str | None = None
    # true: the TSVs in benchmarks_dir are used as they are (no md5 check, never a download;
    # a missing file fails before any work); false: VLMEvalKit's own check and download.
    benchmarks_local: bool = False
    masked_samples: int = Field(200, ge=0)  # held-out masked-span exact match (0 = skip)
    # Per-probe outcome tables (option log-likelihood, one shared format for every arm) for
    # paired statistics (the study): zero-shot and after SFT at each sft.budgets snapshot.
    outcomes: bool = False
    outcome_forms: list[Literal["fillin", "question"]] = ["fillin", "question"]
    # probes per (split, type) in the outcome tables (null: all); prior-conflict probes are
    # always all kept (the study's primary metric)
    outcome_limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _harnesses(self) -> EvalParams:
        if not self.harnesses and not self.outcomes:
            raise ValueError("eval.harnesses must name at least one harness (or eval.outcomes)")
        if self.vlmevalkit_datasets and "vlmevalkit" not in self.harnesses:
            raise ValueError("eval.vlmevalkit_datasets needs vlmevalkit in eval.harnesses")
        return self


class LoraParams(Section):
    """LoRA adapters (peft) instead of full fine-tuning, in every training stage; each stage
    merges its adapters into the model it saves, so later stages load a plain model."""

    r: int = Field(0, ge=0, le=1024)  # adapter rank; 0 = off (full fine-tuning)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    # module names (the language model's projections in Qwen2-VL; the vision tower's are
    # qkv/proj/fc1/fc2) or "all-linear"
    target_modules: list[str] | Literal["all-linear"] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]

    @model_validator(mode="after")
    def _targets(self) -> LoraParams:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("launch.lora.target_modules must name at least one module")
        return self


class LaunchParams(Section):
    """How the training stages (warmup, primer, rl, sft) and the score workers run: the number
    of processes (`python -m mmrpt <stage>` re-executes itself under torchrun when > 1),
    DeepSpeed, precision and memory options. Batch params are GLOBAL batches whatever the
    number of processes: each process takes batch / num_processes."""

    num_processes: int = Field(1, ge=1, le=1024)  # processes on this machine (one per GPU)
    # torchrun (CPU: gloo; GPU: nccl) | accelerate (GPU only: `accelerate launch --cpu` runs
    # one process whatever --num_processes says)
    launcher: Literal["torchrun", "accelerate"] = "torchrun"
    # process group backend; auto: nccl with a GPU per process, else gloo (also when several
    # processes share one GPU: NCCL refuses two ranks on one device)
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    deepspeed: str | None = None  # e.g. mmrpt/deepspeed/zero2.json, zero3.json (> 7B)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where CUDA is, else fp32
    gradient_checkpointing: bool = False  # recompute activations in backward (memory)
    lora: LoraParams = LoraParams()

    @model_validator(mode="after")
    def _deepspeed(self) -> LaunchParams:
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise ValueError(f"launch.deepspeed: no such config file {self.deepspeed}")
        return self


class ReportParams(Section):
    out_dir: str = "reports"


class TrackingParams(Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "mmrpt"


SEED_MAX = 2**31 - 1
SYNTHETIC_SPLITS = ("train", "dev", "test_iid", "test_counter")
# The split lists and names that default (null or absent) to what the data provides.
SPLIT_KEYS = {
    ("warmup", "eval_split"): "check",
    ("score", "splits"): "all",
    ("score", "diagnostic_split"): "first",
    ("score", "report_split"): "second",
    ("mask", "splits"): "all",
    ("primer", "eval_split"): "check",
    ("rl", "eval_splits"): "held_out",
    ("eval", "splits"): "held_out",
}


def default_splits(data: dict[str, Any]) -> dict[str, Any]:
    """The split defaults of a ``data`` section. The world: all four splits, held-out =
    test_iid and test_counter (dev is where choices are made). Real data: the keys of
    data.inputs, held-out = all but train. ``first`` / ``second``: the first two splits besides
    train (null where there are none); ``check``: the split of the caption-loss checks."""
    if data.get("source", "synthetic") == "synthetic":
        everything, held = list(SYNTHETIC_SPLITS), ["test_iid", "test_counter"]
        first, second, check = "dev", "test_iid", "test_iid"
    else:
        everything = list(data.get("inputs") or {})
        held = [s for s in everything if s != "train"]
        first, second = (held + [None, None])[:2]
        check = first
    return {"all": everything, "held_out": held, "first": first, "second": second, "check": check}


def _fill_splits(raw: Any) -> Any:
    """Fill each key of SPLIT_KEYS that is null (or absent) from the data section."""
    if not isinstance(raw, dict):
        return raw
    out = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in raw.items()}
    if not isinstance(out.get("data") or {}, dict):
        return raw  # the data section's own validation reports it
    defaults = default_splits(out.get("data") or {})
    for (section, key), rule in SPLIT_KEYS.items():
        node = out.get(section)
        if node is not None and not isinstance(node, dict):
            continue
        node = dict(node or {})
        if node.get(key) is None:
            node[key] = defaults[rule]
        out[section] = node
    return out


class Params(Section):
    seed: int = Field(0, ge=0, le=SEED_MAX)
    # Replicates of the arm stages (rl, sft, eval: the dvc.yaml matrix arms x seeds); the
    # report gives mean and spread over them. Top-level, so adding seeds reruns no seed.
    seeds: list[int] = Field([0], min_length=1)
    # The arms compared (rl, sft and eval run once per arm and seed); names are folder names.
    arms: dict[str, ArmParams] = Field(default_factory=lambda: dict(DEFAULT_ARMS), min_length=1)
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    warmup: WarmupParams = WarmupParams()
    score: ScoreParams = ScoreParams()
    mask: MaskParams = MaskParams()
    primer: PrimerParams = PrimerParams()
    rl: RLParams = RLParams()
    sft: SFTParams = SFTParams()
    eval: EvalParams = EvalParams()
    report: ReportParams = ReportParams()
    launch: LaunchParams = LaunchParams()
    tracking: TrackingParams = TrackingParams()

    @model_validator(mode="before")
    @classmethod
    def _splits(cls, raw: Any) -> Any:
        return _fill_splits(raw)

    @model_validator(mode="after")
    def _paths(self, info: ValidationInfo) -> Params:
        root = (info.context or {}).get("root", ".")
        problems = path_conflicts(*self.paths(), root)
        if problems:
            raise ValueError("output paths: " + "; ".join(problems))
        return self

    def paths(self) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(outputs, reserved, inputs) for mmrpt.safety.path_conflicts: every folder a
        stage replaces, what must never be written, and what the stages read."""
        outputs = {
            f"{s}.{k}": getattr(getattr(self, s), k)
            for s, keys in (
                ("data", ["out_dir"]),
                ("warmup", ["out_dir", "checkpoint_dir"]),
                ("score", ["out_dir"]),
                ("mask", ["out_dir"]),
                ("primer", ["out_dir", "checkpoint_dir"]),
                ("rl", ["out_dir", "checkpoint_dir"]),
                ("sft", ["out_dir", "checkpoint_dir"]),
                ("eval", ["out_dir"]),
                ("report", ["out_dir"]),
            )
            for k in keys
        }
        reserved = {name: name for name in (*SOURCE, *PROJECT_FILES, "metrics", "plots")}
        reserved["tracking.artifact_root"] = self.tracking.artifact_root
        if self.tracking.tracking_uri.startswith("sqlite:///"):
            reserved["tracking.tracking_uri"] = self.tracking.tracking_uri.removeprefix(
                "sqlite:///"
            )
        inputs = {}
        for split, given in self.data.inputs.items():
            for i, item in enumerate([given] if isinstance(given, str) else given):
                inputs[
                    f"data.inputs.{split}" + (f"[{i}]" if not isinstance(given, str) else "")
                ] = item
        for key, value in (
            ("sft.inputs", self.sft.inputs),
            ("sft.image_root", self.sft.image_root),
            ("model.path", self.model.path),
        ):
            if value is not None:
                inputs[key] = value
        return outputs, reserved, inputs

    @model_validator(mode="after")
    def _cross(self) -> Params:
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0 or max(self.seeds) > 1000:
            raise ValueError("seeds must be distinct integers in 0..1000")
        for name, arm in self.arms.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
                raise ValueError(
                    f"arms.{name}: arm names are folder names: lower-case "
                    "letters, digits and _, starting with a letter"
                )
            if arm.masks != "primary" and arm.masks not in self.mask.selectors:
                raise ValueError(
                    f"arms.{name}.masks={arm.masks!r} is not in mask.selectors "
                    f"{self.mask.selectors}"
                )
        if "counterfactual" in self.mask.selectors and not (
            self.score.counterfactual and self.score.counterfactual_train
        ):
            raise ValueError(
                "mask.selectors counterfactual needs score.counterfactual and "
                "score.counterfactual_train"
            )
        if self.mask.granularity == "attribute" and self.data.source != "synthetic":
            raise ValueError(
                "mask.granularity=attribute hides the synthetic world's colour words; real "
                "captions have no such grammar: use sentence or span"
            )
        if self.mask.selectors[0] == "random":
            raise ValueError("mask.selectors: the first (primary) selector must not be random")
        if self.model.path is None and not self.warmup.enabled:
            raise ValueError(
                "warmup.enabled=false needs model.path (the tiny model starts "
                "untrained and must be warmed up)"
            )
        self._global_batches()
        return self

    def _global_batches(self) -> None:
        """Batch params are global: each of launch.num_processes processes takes an equal
        share, so every batch must divide evenly."""
        n = self.launch.num_processes
        batches = {
            "warmup.batch_size": self.warmup.batch_size,
            "primer.batch_size": self.primer.batch_size,
            "sft.batch_size": self.sft.batch_size,
        }
        objectives = {arm.objective for arm in self.arms.values()}
        if objectives & {"ntp", "sft"}:
            batches["rl.batch_size"] = self.rl.batch_size
        for key, batch in batches.items():
            if batch % n:
                raise ValueError(
                    f"{key}={batch} is a global batch: it must be divisible by "
                    f"launch.num_processes={n}"
                )
        rollouts = self.rl.batch_size * self.rl.num_generations
        if "grpo" in objectives and rollouts % (n * self.rl.micro_batches):
            raise ValueError(
                f"rl.batch_size x rl.num_generations = {rollouts} rollouts per step must be "
                f"divisible by launch.num_processes x rl.micro_batches = "
                f"{n} x {self.rl.micro_batches}"
            )


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


def read_params_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a params file; ParamsError (naming the file) if it is missing, not
    text, not YAML, empty (it would silently mean all defaults) or not a mapping."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such params file") from None
    except UnicodeDecodeError:
        raise ParamsError(f"{path}: not a text file (not UTF-8)") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParamsError(f"{path}: not valid YAML{at}: {problem}") from None
    if raw is None:
        raise ParamsError(
            f"{path}: empty params file (it would silently mean every default); "
            "copy the project's params.yaml"
        )
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    return raw


def load_params(
    path: str | os.PathLike = "params.yaml", overrides: list[str] | dict[str, Any] | None = None
) -> Params:
    raw = read_params_file(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except yaml.YAMLError as e:
        raise ParamsError(f"override: not valid YAML: {getattr(e, 'problem', e)}") from None
    try:
        return Params.model_validate(raw, context={"root": Path(path).resolve().parent})
    except ValidationError as e:
        raise ParamsError(_format(e)) from None
