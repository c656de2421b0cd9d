"""Rejection-sampling fine-tuning (RFT, as in STaR / RAFT): the policy's own completions that
the reward accepts, trained on by supervised fill-in.

The study's control for "RL vs having a verifier": the same masked samples, the same reward
terms as the acceptance test, but imitation of accepted samples instead of a policy gradient.
Offline, as RFT usually is: the starting model (the primer) samples ``n`` completions per
prompt at the rollout temperature once; a completion is accepted when every reward term of
weight > 0 gives it full credit (1.0); the accepted (prompt, completion) pairs are the
supervised data (mmrpt.training.make_trainer, the same recipe as the sft objective).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mmrpt.generation import generate
from mmrpt.images import open_rgb
from mmrpt.masking.samples import MaskedSample
from mmrpt.modeling.encode import Encoded, encode
from mmrpt.rl.rewards import REWARDS


def accepted(
    completions: Sequence[str], samples: Sequence[MaskedSample], weights: Mapping[str, float]
) -> list[bool]:
    """Per completion (of the sample at the same place): does every reward term of weight
    > 0 give it full credit?"""
    columns = {
        "targets": [s.targets for s in samples],
        "masked_caption": [s.masked_caption for s in samples],
        "meta": [s.meta for s in samples],
    }
    ok = np.ones(len(completions), dtype=bool)
    for name, w in weights.items():
        if w > 0:
            ok &= np.asarray(REWARDS[name](list(completions), **columns)) >= 1.0
    return ok.tolist()


def rejection_samples(
    model,
    processor,
    samples: Sequence[MaskedSample],
    root: str | Path,
    *,
    weights: Mapping[str, float],
    n: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int = 16,
) -> tuple[list[tuple[MaskedSample, str]], dict]:
    """The accepted (sample, completion) pairs of ``n`` samples per prompt, and counts."""
    root = Path(root)
    images = [open_rgb(root / s.image) for s in samples]
    outs = generate(
        model,
        processor,
        images,
        [s.prompt for s in samples],
        max_new_tokens,
        batch_size,
        temperature=temperature,
        num_samples=n,
        progress=True,
    )
    repeated = [s for s in samples for _ in range(n)]
    keep = accepted(outs, repeated, weights)
    pairs = [(s, c) for s, c, k in zip(repeated, outs, keep, strict=True) if k]
    prompts_hit = len({s.id for s, _ in pairs})
    return pairs, {
        "rft/sampled": len(outs),
        "rft/accepted": len(pairs),
        "rft/prompts": len(samples),
        "rft/prompts_with_accepted": prompts_hit,
    }


class CompletionDataset(Dataset):
    """Supervised (image, prompt) -> completion items for mmrpt.training.make_trainer."""

    def __init__(self, pairs: Sequence[tuple[MaskedSample, str]], root: str | Path, processor):
        self.pairs, self.root, self.processor = pairs, Path(root), processor

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Encoded:
        s, completion = self.pairs[i]
        return encode(self.processor, open_rgb(self.root / s.image), s.prompt, completion)
