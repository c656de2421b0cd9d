"""Batched generation from (image, prompt) pairs: greedy, or sampled at a temperature.

Greedy means greedy: the checkpoint's generation_config (e.g. Qwen2.5-VL's
repetition_penalty 1.05, top_k/top_p, sampling on) is replaced by an explicit config here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from mmrpt.modeling.encode import collate, encode
from mmrpt.progress import bar


def decoding_config(
    model, tokenizer, max_new_tokens: int, temperature: float | None = None, num_samples: int = 1
) -> GenerationConfig:
    """The model's generation config (its eos tokens) with the decoding replaced: greedy
    (``temperature`` None) or pure temperature sampling, no repetition penalty, no top-k/top-p,
    whatever the checkpoint's defaults say."""
    if temperature is None and num_samples != 1:
        raise ValueError("num_samples > 1 needs a temperature (greedy gives one completion)")
    config = copy.deepcopy(model.generation_config)
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature is not None
        else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    )
    config.update(
        max_new_tokens=max_new_tokens,
        repetition_penalty=1.0,
        min_new_tokens=None,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        num_beams=1,
        **sampling,
    )
    return config


@torch.no_grad()
def generate(
    model,
    processor,
    images,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    prefixes: Sequence[str] | None = None,
    stop_at: str | None = None,
    progress: bool = False,
    temperature: float | None = None,
    num_samples: int = 1,
) -> list[str]:
    """Greedy completions (left-padded batches), or with a ``temperature`` ``num_samples``
    sampled ones per prompt (consecutive in the output, pure temperature sampling as in the
    GRPO rollouts). ``prefixes`` are forced at the start of the assistant turn (used for
    caption continuation); ``stop_at`` cuts each completion after the first occurrence of
    that string."""
    config = decoding_config(model, processor.tokenizer, max_new_tokens, temperature, num_samples)
    model.eval()
    device = next(model.parameters()).device
    tok = processor.tokenizer
    out: list[str] = []
    for i in bar(range(0, len(prompts), batch_size), desc="generate", enabled=progress):
        encs = [
            encode(
                processor, images[j], prompts[j], prefixes[j] if prefixes else "", end_of_turn=False
            )
            for j in range(i, min(i + batch_size, len(prompts)))
        ]
        batch = collate(encs, tok.pad_token_id, padding_side="left")
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        ids = model.generate(**batch, generation_config=config)
        for row in ids[:, batch["input_ids"].shape[1] :]:
            text = tok.decode(row, skip_special_tokens=True)
            if stop_at and stop_at in text:
                text = text[: text.index(stop_at) + len(stop_at)]
            out.append(text)
    return out
