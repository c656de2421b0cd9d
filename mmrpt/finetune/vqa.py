"""Downstream supervised fine-tuning (the `sft` stage): the same VQA/instruction data and the
same recipe for every arm, on TRL's SFTTrainer.

TRL does the work: prompt-completion conversations with images, its vision-language collator
(image placeholders expanded by the processor, loss on the completion only), checkpointing.
This module supplies the rows, from either source:
- the synthetic world's train-split probes (question -> the true option's text);
- LLaVA-style JSON (``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}]``),
  one row per assistant turn with the earlier turns as the prompt; ``<image>`` markers are
  dropped (the image always goes first). Rows that cannot be used (missing, unreadable or
  oversized image, no assistant turn, empty text, text that is not Unicode, too long or holds
  a special token such as ``<|im_end|>``: it would become a control token in TRL's chat
  template) are refused with a reason and counted, never dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from mmrpt.data.readers import BadInput, load_image
from mmrpt.images import open_rgb
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained
from mmrpt.safety import text_problem, utf8_safe


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


def llava_rows(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    max_text_chars: int | None = None,
    max_pixels: int = 4096 * 4096,
) -> tuple[list[dict], Refused]:
    """Prompt-completion rows from a LLaVA-style JSON file, and what was refused and why
    (``max_text_chars``: of a conversation's turns together; ``max_pixels``: per image)."""
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
        rows.extend(_conversation_rows(item, root, rid, refused, max_text_chars, max_pixels))
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


def _conversation_rows(
    item, root: Path, rid: str, refused: Refused, max_chars: int | None, max_pixels: int
) -> Iterator[dict]:
    if not isinstance(item, dict) or not isinstance(item.get("conversations"), list):
        refused.refuse(rid, "no conversations list")
        return
    if not item.get("image"):
        refused.refuse(rid, "no image")
        return
    problem = _text_problem(item["conversations"], max_chars)
    if problem:
        refused.refuse(rid, problem)
        return
    path = str(item["image"])
    if not utf8_safe([path]):
        refused.refuse(rid, "image path not Unicode: lone surrogate")
        return
    try:
        image = load_image(root / path, max_pixels)  # header checked before any decoding
    except BadInput as e:
        refused.refuse(rid, f"unreadable image: {str(e).split(':')[0]}")
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


class ResumableSFTTrainer(LoadsCheckpointsByFromPretrained, SFTTrainer):
    """TRL's SFTTrainer with a resume that restores Qwen2-VL weights (see the mixin)."""


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
    deepspeed: str | None = None,
    bf16: bool = False,
) -> SFTTrainer:
    processor.tokenizer.padding_side = "right"
    args = SFTConfig(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
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
        use_cpu=not torch.cuda.is_available(),
        bf16=bf16,
        deepspeed=deepspeed,
        max_length=max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    return ResumableSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=processor,
        callbacks=list(callbacks),
    )
