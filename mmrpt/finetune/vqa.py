"""Downstream supervised fine-tuning (the `sft` stage): the same VQA/instruction data and the
same recipe for every arm, on TRL's SFTTrainer.

TRL does the work: prompt-completion conversations with images, its vision-language collator
(image placeholders expanded by the processor, loss on the completion only), checkpointing.
This module supplies the rows, from either source:
- the synthetic world's train-split probes (question -> the true option's text);
- LLaVA-style JSON (``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]``),
  one row per assistant turn with the earlier turns as the prompt; ``<image>`` markers are
  dropped (the image always goes first). Rows that cannot be used (missing or unreadable
  image, no assistant turn, empty text) are refused with a reason and counted, never dropped
  silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from mmrpt.images import open_rgb
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.training import ONE_PROCESS, CountsRows, TrainOptions, per_device, with_lora


def _user(text: str, image: bool) -> dict:
    content = [{"type": "image"}] if image else []
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def probe_rows(probes: Sequence[dict], root: str | Path) -> list[dict]:
    """Question -> answer rows from the world's probes (images opened once per scene)."""
    root, images = Path(root), {}
    rows = []
    for p in probes:
        if p["image"] not in images:
            images[p["image"]] = open_rgb(root / p["image"])
        rows.append(
            {
                "prompt": [_user(p["question"], image=True)],
                "completion": [_assistant(p["choices"][p["answer"]])],
                "images": [images[p["image"]]],
            }
        )
    return rows


@dataclass
class Refused:
    n_input: int = 0
    reasons: Counter = field(default_factory=Counter)
    rows: list[dict] = field(default_factory=list)

    def refuse(self, item_id: str, reason: str) -> None:
        self.reasons[reason] += 1
        self.rows.append({"id": item_id, "reason": reason})


def llava_rows(
    path: str | Path, image_root: str | Path | None = None
) -> tuple[list[dict], Refused]:
    """Prompt-completion rows from a LLaVA-style JSON file, and what was refused and why."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"sft.inputs: cannot read {path}: {e}") from e
    if not isinstance(items, list):
        raise ValueError(f"sft.inputs: {path} must hold a JSON list of conversations")
    refused, rows = Refused(n_input=len(items)), []
    for k, item in enumerate(items):
        rid = str(item.get("id", k)) if isinstance(item, dict) else str(k)
        rows.extend(_conversation_rows(item, root, rid, refused))
    return rows, refused


def _conversation_rows(item, root: Path, rid: str, refused: Refused) -> Iterator[dict]:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        refused.refuse(rid, "no conversations list")
        return
    if not item.get("image"):
        refused.refuse(rid, "no image")
        return
    try:
        image = open_rgb(root / str(item["image"]))
    except (OSError, ValueError) as e:
        refused.refuse(rid, f"unreadable image: {type(e).__name__}")
        return
    history: list[dict] = []
    n = 0
    for turn in item["conversations"]:
        text = str(turn.get("value", "")).replace("<image>", "").strip()
        if turn.get("from") in ("human", "user"):
            history.append(_user(text, image=not history))
        elif turn.get("from") in ("gpt", "assistant") and history and text:
            yield {"prompt": list(history), "completion": [_assistant(text)], "images": [image]}
            history.append(_assistant(text))
            n += 1
    if n == 0:
        refused.refuse(rid, "no answered human turn")


class ResumableSFTTrainer(LoadsCheckpointsByFromPretrained, CountsRows, SFTTrainer):
    """TRL's SFTTrainer with a resume that restores Qwen2-VL weights (see the mixin) and a
    count of the rows per step (CountsRows)."""


def make_sft_trainer(
    model,
    processor,
    rows: Sequence[dict],
    *,
    out_dir: str | Path,
    steps: int,
    batch_size: int,
    lr: float,
    save_steps: int,
    seed: int,
    max_length: int | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    options: TrainOptions = ONE_PROCESS,
) -> SFTTrainer:
    """TRL's SFTTrainer over ``rows``: ``batch_size`` rows per optimizer step over all
    processes."""
    processor.tokenizer.padding_side = "right"
    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=per_device(batch_size, options.world_size),
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=max(1, min(10, steps // 4)),
        save_steps=save_steps,
        save_total_limit=2,
        seed=seed,
        data_seed=seed,
        report_to=[],
        max_length=max_length,
        completion_only_loss=True,
        dataloader_num_workers=0,
        **options.training_args(),
    )
    return ResumableSFTTrainer(
        model=with_lora(model, options.lora),
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=processor,
        callbacks=list(callbacks),
    )
