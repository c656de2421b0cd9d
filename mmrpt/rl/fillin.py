"""Masked-span fill-in: the supervised target format, batched greedy generation, and the
held-out exact-match evaluation shared by the primer, every arm and the report.

The policy answers ``<think>...</think><answer>[1] ... [2] ...</answer>``. In supervised
targets (primer, masked_sft arm) the think block is a fixed short sentence (our choice: the
tiny model has no reasoning to imitate; the block exists so RL can grow it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmrpt.masking.select import format_answer
from mmrpt.modeling.encode import Encoded, collate, encode
from mmrpt.pretrain.warmup import open_rgb
from mmrpt.rl.rewards import exact_reward, normalise

THINK = "I compare the caption with the image."


def fillin_target(targets: Sequence[str], think: str = THINK) -> str:
    return f"<think>{think}</think><answer>{format_answer(targets)}</answer>"


def read_samples(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class FillInDataset(Dataset):
    def __init__(self, samples: Sequence[dict], root: str | Path, processor):
        self.samples, self.root, self.processor = samples, Path(root), processor

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Encoded:
        s = self.samples[i]
        return encode(self.processor, open_rgb(self.root / s["image"]), s["prompt"],
                      fillin_target(s["targets"]))


@torch.no_grad()
def generate(model, processor, images, prompts: Sequence[str], max_new_tokens: int,
             batch_size: int = 32, prefixes: Sequence[str] | None = None,
             stop_at: str | None = None, progress: bool = False,
             temperature: float | None = None, num_samples: int = 1) -> list[str]:
    """Greedy completions (left-padded batches), or with a ``temperature`` ``num_samples``
    sampled ones per prompt (consecutive in the output, pure temperature sampling as in the
    GRPO rollouts). ``prefixes`` are forced at the start of the assistant turn (used for
    caption continuation); ``stop_at`` cuts each completion after the first occurrence of
    that string."""
    if temperature is None and num_samples != 1:
        raise ValueError("num_samples > 1 needs a temperature (greedy gives one completion)")
    sampling = ({"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0,
                 "num_return_sequences": num_samples} if temperature is not None
                else {"do_sample": False})
    model.eval()
    device = next(model.parameters()).device
    tok = processor.tokenizer
    out: list[str] = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress,
                  leave=False):
        encs = [encode(processor, images[j], prompts[j], prefixes[j] if prefixes else "",
                       end_of_turn=False) for j in range(i, min(i + batch_size, len(prompts)))]
        batch = collate(encs, tok.pad_token_id, padding_side="left")
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, **sampling,
                             pad_token_id=tok.pad_token_id)
        for row in ids[:, batch["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True)
            if stop_at and stop_at in text:
                text = text[: text.index(stop_at) + len(stop_at)]
            out.append(text)
    return out


def fillin_exact_match(model, processor, samples: Sequence[dict], root: str | Path,
                       max_new_tokens: int = 96, batch_size: int = 32) -> tuple[float, list[str]]:
    """Mean exact match over samples (each the mean over its placeholders), greedy."""
    root = Path(root)
    images = [open_rgb(root / s["image"]) for s in samples]
    completions = generate(model, processor, images, [s["prompt"] for s in samples],
                           max_new_tokens, batch_size)
    scores = exact_reward(completions, [s["targets"] for s in samples])
    return float(np.mean(scores)) if scores else float("nan"), completions


def caption_exact_match(model, processor, samples: Sequence[dict], root: str | Path,
                        prompt: str, max_new_tokens: int = 24, batch_size: int = 32) -> float:
    """How a caption-only model reconstructs hidden sentences: given the image and the
    caption up to a hidden span, it continues the caption; exact match of the next sentence."""
    root = Path(root)
    images, prefixes, targets = [], [], []
    for s in samples:
        img = open_rgb(root / s["image"])
        for (a, _), t in zip(s["spans"], s["targets"], strict=True):
            images.append(img)
            prefixes.append(s["caption"][:a].rstrip())
            targets.append(t)
    outs = generate(model, processor, images, [prompt] * len(images), max_new_tokens,
                    batch_size, prefixes=prefixes, stop_at=".")
    hits = [normalise(o) == normalise(t) for o, t in zip(outs, targets, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")
