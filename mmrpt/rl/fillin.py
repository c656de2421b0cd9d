"""Masked-span fill-in: the supervised dataset (primer, masked_sft arm) and the held-out
exact-match evaluation shared by the primer, every arm and the report. The target format is
MaskedSample.target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mmrpt.generation import generate
from mmrpt.images import open_rgb
from mmrpt.masking.samples import MaskedSample
from mmrpt.modeling.encode import Encoded, encode
from mmrpt.rl.rewards import exact_reward, normalise


class FillInDataset(Dataset):
    def __init__(self, samples: Sequence[MaskedSample], root: str | Path, processor):
        self.samples, self.root, self.processor = samples, Path(root), processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Encoded:
        s = self.samples[i]
        return encode(self.processor, open_rgb(self.root / s.image), s.prompt, s.target)


def fillin_exact_match(
    model,
    processor,
    samples: Sequence[MaskedSample],
    root: str | Path,
    max_new_tokens: int = 96,
    batch_size: int = 32,
) -> tuple[float, list[str]]:
    """Mean exact match over samples (each the mean over its placeholders), greedy."""
    root = Path(root)
    images = [open_rgb(root / s.image) for s in samples]
    completions = generate(
        model, processor, images, [s.prompt for s in samples], max_new_tokens, batch_size
    )
    scores = exact_reward(completions, [s.targets for s in samples], [s.think for s in samples])
    return float(np.mean(scores)) if scores else float("nan"), completions


def caption_exact_match(
    model,
    processor,
    samples: Sequence[MaskedSample],
    root: str | Path,
    prompt: str,
    max_new_tokens: int = 24,
    batch_size: int = 32,
) -> float:
    """How a caption-only model reconstructs hidden sentences: given the image and the
    caption up to a hidden span, it continues the caption; exact match of the next sentence."""
    root = Path(root)
    images, prefixes, targets = [], [], []
    for s in samples:
        img = open_rgb(root / s.image)
        for (a, _), t in zip(s.spans, s.targets, strict=True):
            images.append(img)
            prefixes.append(s.caption[:a].rstrip())
            targets.append(t)
    outs = generate(
        model,
        processor,
        images,
        [prompt] * len(images),
        max_new_tokens,
        batch_size,
        prefixes=prefixes,
        stop_at=".",
    )
    hits = [normalise(o) == normalise(t) for o, t in zip(outs, targets, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")
