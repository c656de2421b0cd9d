"""Downstream supervised fine-tuning (the `sft` stage): the same VQA/instruction data and the
same recipe for every arm, on TRL's SFTTrainer.

TRL does the work: prompt-completion conversations with images, its vision-language collator
(image placeholders expanded by the processor, loss on the completion only), checkpointing.
This module supplies the rows, from either source:
- the synthetic world's train-split probes (question -> the true option's text);
- LLaVA-style JSON (``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]``,
  ``image`` one path, a list of paths or absent): one row per conversation (each image
  encoded once), loss on every assistant turn (TRL's assistant-only loss through the chat
  template's generation markers; Qwen2/2.5-VL's template gets TRL's training variant, which
  renders the same text), ``<image>`` markers become image parts where they stand, multi-image
  and text-only conversations included. Images are paths until a batch is built (a dataset
  transform decodes them), so nothing is decoded up front. Items that cannot be used (missing,
  unreadable or oversized image, markers that do not match the images, no answered turn, text
  that is not Unicode, too long or holds a special token such as ``<|im_end|>``: it would
  become a control token in TRL's chat template) are refused with a reason and counted, never
  dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from PIL import Image
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import has_generation_markers, qwen2_5_vl_training_chat_template
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from mmrpt.images import open_rgb
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.safety import text_problem, utf8_safe
from mmrpt.training import (
    ONE_PROCESS,
    ClockFreeState,
    CountsRows,
    TrainOptions,
    per_device,
    quiet_printing,
    with_lora,
)

IMAGE_MARKER = "<image>"


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
        if not utf8_safe([item_id]):  # the rejects file is UTF-8
            item_id = item_id.encode("utf-8", "backslashreplace").decode("utf-8")
        self.rows.append({"id": item_id, "reason": reason})


ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
ROLES["system"] = "system"


def llava_rows(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    max_text_chars: int | None = None,
    max_pixels: int = 4096 * 4096,
) -> tuple[list[dict], Refused]:
    """One row per conversation of a LLaVA-style JSON file, and what was refused and why.

    A row is ``{"messages": JSON text of the chat messages, "images": [image paths]}``:
    every turn in order (loss later on every assistant turn), ``<image>`` markers as image
    parts at their place in the text (no marker: the images go first in the first user
    turn, LLaVA's convention), ``image`` a path, a list of paths or absent (text-only).
    Images are checked (exists, readable header, at most ``max_pixels``) but not decoded:
    ``llava_dataset`` decodes them when a batch is built. ``max_text_chars``: of a
    conversation's turns together."""
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
        row = _conversation_row(item, root, rid, refused, max_text_chars, max_pixels)
        if row is not None:
            rows.append(row)
    return rows, refused


def _text_problem(turns: list, max_chars: int | None) -> str | None:
    if not all(isinstance(t, dict) for t in turns):
        return "turn is not an object"
    texts = [str(t.get("value", "")) for t in turns]
    for text in texts:
        problem = text_problem(text, what="text")
        if problem:
            return problem
    n = sum(map(len, texts))
    if max_chars is not None and n > max_chars:
        return f"text too long: {n} characters > {max_chars}"
    return None


def _image_paths(item: dict, root: Path, max_pixels: int) -> list[str]:
    images = item.get("image")
    if images is None or images == []:
        return []
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise ValueError("bad image field")
    if not utf8_safe(images):
        raise ValueError("image path not Unicode: lone surrogate")
    out = []
    for name in images:
        p = root / name
        if not p.is_file():
            raise ValueError("missing image file")
        try:
            with Image.open(p) as im:  # the header only: decoded when a batch is built
                width, height = im.size
        except Image.DecompressionBombError:  # PIL's own limit, from the header
            raise ValueError("unreadable image: image too large") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"unreadable image: {type(e).__name__}") from None
        if width * height > max_pixels:
            raise ValueError("unreadable image: image too large")
        out.append(str(p))
    return out


def _content(text: str) -> list[dict]:
    """Text with ``<image>`` markers -> image and text parts in order."""
    parts: list[dict] = []
    for j, piece in enumerate(text.split(IMAGE_MARKER)):
        if j:
            parts.append({"type": "image"})
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return parts


def _conversation_row(
    item, root: Path, rid: str, refused: Refused, max_chars: int | None, max_pixels: int
) -> dict | None:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        refused.refuse(rid, "no conversations list")
        return None
    problem = _text_problem(item["conversations"], max_chars)
    if problem:
        refused.refuse(rid, problem)
        return None
    try:
        images = _image_paths(item, root, max_pixels)
    except ValueError as e:
        refused.refuse(rid, str(e))
        return None
    messages: list[dict] = []
    for turn in item["conversations"]:
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        content = _content(str(turn.get("value", ""))) if role else []
        if role and content:
            messages.append({"role": role, "content": content})
    markers = sum(p["type"] == "image" for m in messages for p in m["content"])
    if markers == 0 and images:
        first = next((m for m in messages if m["role"] == "user"), None)
        if first is not None:
            first["content"][:0] = [{"type": "image"} for _ in images]
            markers = len(images)
    if markers != len(images):
        refused.refuse(rid, f"{markers} <image> markers for {len(images)} images")
        return None
    answered = any(
        m["role"] == "assistant" and any(x["role"] == "user" for x in messages[:i])
        for i, m in enumerate(messages)
    )
    if not answered:
        refused.refuse(rid, "no answered human turn")
        return None
    return {"messages": json.dumps(messages, ensure_ascii=False), "images": images}


def _decode(batch: dict) -> dict:
    """with_transform: messages from JSON, image paths decoded to RGB, per batch."""
    return {
        "messages": [json.loads(m) for m in batch["messages"]],
        "images": [[open_rgb(p) for p in paths] for paths in batch["images"]],
    }


def llava_dataset(rows: Sequence[dict]) -> Dataset:
    """The rows as a datasets.Dataset that decodes images only when an item is read (the
    trainer's collator gets PIL images; nothing is decoded up front)."""
    return Dataset.from_list(list(rows)).with_transform(_decode)


class ResumableSFTTrainer(LoadsCheckpointsByFromPretrained, CountsRows, ClockFreeState, SFTTrainer):
    """TRL's SFTTrainer with a resume that restores Qwen2-VL weights (see the mixin), a
    count of the rows per step (CountsRows) and checkpoints without the clock
    (ClockFreeState)."""


def make_sft_trainer(
    model,
    processor,
    rows: Sequence[dict] | Dataset,
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
    conversational = isinstance(rows, Dataset)  # llava_dataset: whole conversations
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
        completion_only_loss=None if conversational else True,
        dataloader_num_workers=0,
        remove_unused_columns=not conversational,  # llava rows decode in a transform
        **options.training_args(),
    )
    collator = None
    if conversational:  # loss on every assistant turn (the template's generation markers)
        template = processor.chat_template
        if not has_generation_markers(template):
            template = qwen2_5_vl_training_chat_template  # renders as Qwen2/2.5-VL's
        collator = DataCollatorForVisionLanguageModeling(
            processor, max_length=max_length, assistant_only_loss=True, chat_template=template
        )
    trainer = ResumableSFTTrainer(
        model=with_lora(model, options.lora),
        args=args,
        train_dataset=rows if conversational else Dataset.from_list(list(rows)),
        processing_class=processor,
        data_collator=collator,
        callbacks=list(callbacks),
    )
    return quiet_printing(trainer)
