"""Caption next-token pre-training (the standard objective the paper argues against).

Built on transformers' Trainer (checkpointing, resume with optimizer/scheduler/RNG state,
gradient accumulation, DeepSpeed via accelerate); this module only supplies the dataset and
collator. Loss is on caption tokens (and the end-of-turn token), never on the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from mmrpt.data.records import Record
from mmrpt.modeling.encode import Encoded, collate, encode
from mmrpt.modeling.lm import sentence_losses
from mmrpt.modeling.loader import LoadsCheckpointsByFromPretrained


def open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class CaptionDataset(Dataset):
    def __init__(self, records: Sequence[Record], root: str | Path, processor, prompt: str):
        self.records, self.root, self.processor, self.prompt = records, Path(root), processor, prompt

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Encoded:
        r = self.records[i]
        return encode(self.processor, open_rgb(self.root / r.image), self.prompt, r.caption)


class ResumableTrainer(LoadsCheckpointsByFromPretrained, Trainer):
    """HF Trainer with a resume that restores Qwen2-VL weights (see the mixin)."""


def make_trainer(model, processor, dataset: Dataset, *, out_dir: str | Path, max_steps: int,
                 batch_size: int, lr: float, weight_decay: float, warmup_ratio: float,
                 save_steps: int, save_total_limit: int, log_steps: int, seed: int,
                 callbacks: Sequence[TrainerCallback] = (), deepspeed: str | None = None,
                 bf16: bool = False) -> Trainer:
    pad_id = processor.tokenizer.pad_token_id
    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, weight_decay=weight_decay, warmup_steps=warmup_ratio,
        lr_scheduler_type="cosine", logging_steps=log_steps, save_steps=save_steps,
        save_total_limit=save_total_limit, seed=seed, data_seed=seed, report_to=[],
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(),
        bf16=bf16, deepspeed=deepspeed, save_only_model=False, gradient_checkpointing=False,
    )
    return ResumableTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=lambda items: collate(items, pad_id),
                            callbacks=list(callbacks))


def vision_reliance(model, processor, records: Sequence[Record], root: str | Path, prompt: str,
                    batch_size: int = 32) -> dict[str, float]:
    """Mean caption token loss with the true image vs a shuffled one (image of the next record),
    split by the sentences' ground-truth label (unlabelled sentences count as dependent)."""
    root = Path(root)
    images = [open_rgb(root / r.image) for r in records]
    shuffled = images[1:] + images[:1]
    captions = [r.caption for r in records]
    spans = [[(s.start, s.end) for s in r.sentences] for r in records]
    true = sentence_losses(model, processor, images, captions, spans, prompt, batch_size)
    swap = sentence_losses(model, processor, shuffled, captions, spans, prompt, batch_size)
    labels = [np.array([1 if s.label is None else s.label for s in r.sentences]) for r in records]

    def mean(losses: list[np.ndarray], label: int) -> float:
        tot = sum(a[lab == label].sum(axis=0) for a, lab in zip(losses, labels, strict=True))
        return float(tot[0] / max(tot[1], 1))

    out = {"loss_true_image": mean(true, 1), "loss_shuffled_image": mean(swap, 1),
           "loss_true_image_independent": mean(true, 0),
           "loss_shuffled_image_independent": mean(swap, 0)}
    out["image_gain"] = 1 - out["loss_true_image"] / out["loss_shuffled_image"]
    if out["loss_shuffled_image_independent"] > 0:
        out["image_gain_independent"] = (1 - out["loss_true_image_independent"]
                                         / out["loss_shuffled_image_independent"])
    return out
