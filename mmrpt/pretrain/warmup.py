"""Caption next-token pre-training (the standard objective the paper argues against): the
dataset for mmrpt.training.make_trainer (loss on caption tokens and the end-of-turn token,
never on the prompt) and the check that a model uses the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mmrpt.data.records import Record
from mmrpt.images import open_rgb
from mmrpt.modeling.encode import Encoded, encode
from mmrpt.modeling.lm import sentence_losses


class CaptionDataset(Dataset):
    def __init__(self, records: Sequence[Record], root: str | Path, processor, prompt: str):
        self.records, self.root, self.processor, self.prompt = (
            records,
            Path(root),
            processor,
            prompt,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Encoded:
        r = self.records[i]
        return encode(self.processor, open_rgb(self.root / r.image), self.prompt, r.caption)


def vision_reliance(
    model, processor, records: Sequence[Record], root: str | Path, prompt: str, batch_size: int = 32
) -> dict[str, float]:
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

    out = {"loss_true_image": mean(true, 1), "loss_shuffled_image": mean(swap, 1)}
    out["image_gain"] = 1 - out["loss_true_image"] / out["loss_shuffled_image"]
    if any((lab == 0).any() for lab in labels):  # labelled independent sentences (the world)
        out["loss_true_image_independent"] = mean(true, 0)
        out["loss_shuffled_image_independent"] = mean(swap, 0)
    if out.get("loss_shuffled_image_independent", 0) > 0:
        out["image_gain_independent"] = (
            1 - out["loss_true_image_independent"] / out["loss_shuffled_image_independent"]
        )
    return out
