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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mmrpt.generation import generate
from mmrpt.images import open_rgb
from mmrpt.io import write_json_atomic
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
        "think": [s.think for s in samples],  # the answer format the sample asks for
        "occurrence": [s.occurrence for s in samples],  # which placeholder is the blank
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
    """The accepted (sample, completion) pairs of ``n`` samples per prompt, and counts:
    accepted/sampled, and the sampling pass's tokens (``tokens/prefill``: the prompts with
    their image tokens, once per sample as generate expands them; ``tokens/generated``: the
    completions as the tokenizer reads them back)."""
    root = Path(root)
    images = [open_rgb(root / s.image) for s in samples]
    tok = processor.tokenizer
    prompt_tokens = [
        len(encode(processor, img, s.prompt, "", end_of_turn=False).input_ids)
        for img, s in zip(images, samples, strict=True)
    ]
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
    generated = sum(len(ids) + 1 for ids in tok(list(outs), add_special_tokens=False).input_ids)
    return pairs, {
        "tokens/prefill": n * sum(prompt_tokens),
        "tokens/generated": min(generated, len(outs) * (max_new_tokens)),
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


def write_accepted(path: str | Path, pairs: Sequence[tuple[MaskedSample, str]], counts: dict):
    """The accepted pairs (sample ids and completions) and the counts, as JSON: a resumed run
    trains on the same data without sampling again."""
    rows = [{"id": s.id, "completion": c} for s, c in pairs]
    write_json_atomic(path, {"counts": counts, "accepted": rows})


def read_accepted(
    path: str | Path, samples: Sequence[MaskedSample]
) -> tuple[list[tuple[MaskedSample, str]], dict]:
    saved = json.loads(Path(path).read_text(encoding="utf-8"))
    by_id = {s.id: s for s in samples}
    return [(by_id[r["id"]], r["completion"]) for r in saved["accepted"]], saved["counts"]
