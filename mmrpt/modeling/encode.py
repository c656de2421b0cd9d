"""Turning (image, prompt, target text) into model inputs, batching them, and per-token losses.

The prompt goes through the processor (chat template + image placeholder expansion); the target
is tokenised on its own with character offsets, so every target token maps back to a character
span of the caption. That map is what lets later stages score, mask and evaluate sentences.
Works for any Qwen2-VL-style processor (the tiny one or a real Qwen2/2.5-VL).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    mm_token_type_ids: list[int]
    pixel_values: torch.Tensor  # (patches, patch_dim)
    image_grid_thw: torch.Tensor  # (1, 3)
    target_start: int  # position of the first target token
    offsets: list[tuple[int, int]]  # char span in the target text of each target token


def chat_prompt(processor, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


# processor -> {(prompt, image grid): (prompt ids, mm token types)}, the most recently used
# PROMPT_CACHE keys; None where the image processor alone does not give the processor's
# pixels (then every call takes the processor)
_prompt_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
PROMPT_CACHE = 256  # training repeats one prompt; the scorer asks a new question per probe


def _encode_prompt(processor, image: Image.Image, prompt: str) -> dict:
    """The input_ids, mm_token_type_ids, pixel_values and image_grid_thw of
    ``processor(text=[chat prompt], images=[image])`` (tensors: read them, do not change
    them), with the prompt's text part cached: a Qwen2-VL-style processor's text depends on
    the image only through its grid (the number of placeholder tokens), and rendering the
    template, expanding the placeholders and tokenising cost 0.47 of the 0.70 ms per call
    (the image part 0.23 ms; bench/encode_prompt.py) on the embedded model, every sample of
    every training step. The
    first call per (prompt, grid) runs the processor and checks that its pixels equal the
    image processor's alone; if they do not, this processor is never cached."""
    cache = _prompt_ids.get(processor, OrderedDict())
    if cache is None:
        return processor(text=[chat_prompt(processor, prompt)], images=[image], return_tensors="pt")
    pixels = processor.image_processor(images=[image], return_tensors="pt")
    key = (prompt, tuple(pixels["image_grid_thw"][0].tolist()))
    if key not in cache:
        enc = processor(text=[chat_prompt(processor, prompt)], images=[image], return_tensors="pt")
        same = set(pixels) <= set(enc) and all(torch.equal(v, enc[k]) for k, v in pixels.items())
        _prompt_ids[processor] = cache if same else None
        if same:
            cache[key] = (enc["input_ids"], enc.get("mm_token_type_ids"))
            if len(cache) > PROMPT_CACHE:
                cache.popitem(last=False)
        return enc
    cache.move_to_end(key)
    ids, mm = cache[key]
    return {"input_ids": ids, "mm_token_type_ids": mm, **pixels}


def encode(
    processor, image: Image.Image, prompt: str, target: str, end_of_turn: bool = True
) -> Encoded:
    """Encode one example; ``labels`` cover the target (and the end-of-turn token) only. The
    target never yields a special token (``split_special_tokens``)."""
    enc = _encode_prompt(processor, image, prompt)
    tok = processor.tokenizer
    # text is text: a special token written in a caption stays characters (defence in depth;
    # the readers reject such captions, mmrpt.safety.text_problem)
    tgt = tok(
        target, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
    )
    tgt_ids = list(tgt["input_ids"])
    end_ids = tok("<|im_end|>", add_special_tokens=False)["input_ids"] if end_of_turn else []
    prompt_ids = enc["input_ids"][0].tolist()
    mm = enc.get("mm_token_type_ids")
    mm = mm[0].tolist() if mm is not None else [0] * len(prompt_ids)
    n_new = len(tgt_ids) + len(end_ids)
    return Encoded(
        input_ids=prompt_ids + tgt_ids + end_ids,
        labels=[IGNORE] * len(prompt_ids) + tgt_ids + end_ids,
        mm_token_type_ids=mm + [0] * n_new,
        pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"],
        target_start=len(prompt_ids),
        offsets=[tuple(o) for o in tgt["offset_mapping"]],
    )


def collate(items: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> dict:
    """Pad a batch. Returns the model's keyword arguments plus ``labels``."""
    width = max(len(e.input_ids) for e in items)

    def pad(seq: list[int], value: int) -> list[int]:
        fill = [value] * (width - len(seq))
        return fill + seq if padding_side == "left" else seq + fill

    return {
        "input_ids": torch.tensor([pad(e.input_ids, pad_id) for e in items]),
        "attention_mask": torch.tensor([pad([1] * len(e.input_ids), 0) for e in items]),
        "mm_token_type_ids": torch.tensor([pad(e.mm_token_type_ids, 0) for e in items]),
        "labels": torch.tensor([pad(e.labels, IGNORE) for e in items]),
        "pixel_values": torch.cat([e.pixel_values for e in items]),
        "image_grid_thw": torch.cat([e.image_grid_thw for e in items]),
    }


LOGITS_BUDGET = 2**25  # fp32 logits held at once by target_log_probs (128 MB)


def target_log_probs(
    hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """log p(target) of each row: hidden (N, H), targets (N,) -> (N,) fp32.

    The output head runs on ``chunk`` rows at a time (default: LOGITS_BUDGET // V rows, 220
    at V = 151,936; every row at once for the tiny model) and only each row's target
    log-prob is kept: the whole batch's (B, T, V) logits are never built (2.3 GB per 1280x720
    sample at V = 151,936). Cross-entropy per row, as ``token_losses`` computes it: one chunk
    gives its values bit for bit, several agree to float rounding (~1e-7)."""
    if chunk is None:
        chunk = max(1, LOGITS_BUDGET // head.weight.shape[0])
    out = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for i in range(0, len(targets), chunk):
        logits = head(hidden[i : i + chunk]).float()  # (chunk, V)
        out[i : i + chunk] = -F.cross_entropy(logits, targets[i : i + chunk], reduction="none")
    return out


def target_losses(
    model, batch: dict, labels: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Per-position next-token loss of ``labels`` (B, T) -> (B, T), as ``token_losses`` of the
    model's logits, without them: the model runs to its last hidden states (a Qwen2-VL-style
    ``model.model``, no KV cache) and the output head is applied to the target positions only,
    in chunks (``target_log_probs``)."""
    hidden = model.model(**batch, use_cache=False).last_hidden_state  # (B, T, H)
    shifted = labels[:, 1:]
    where = shifted != IGNORE  # (B, T - 1): position t predicts labels[:, t + 1]
    loss = torch.zeros(shifted.shape, dtype=torch.float32, device=hidden.device)
    if where.any():
        head = model.get_output_embeddings()
        loss[where] = -target_log_probs(hidden[:, :-1][where], head, shifted[where], chunk)
    return F.pad(loss, (1, 0))


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss from full logits (the reference ``target_losses`` is
    checked against; only for small batches: it needs (B, T, V) logits).

    logits (B, T, V), labels (B, T) -> (B, T) where out[b, t] is the loss of predicting
    labels[b, t] from positions < t; 0 where labels[b, t] is IGNORE (and at t = 0).
    """
    shifted = labels[:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        shifted.flatten(),
        ignore_index=IGNORE,
        reduction="none",
    ).view_as(shifted)
    return F.pad(loss, (1, 0))


def sentence_of_tokens(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """For each target token, the index of the sentence span holding its last character
    (-1 for tokens between sentences, e.g. a lone space). Spans must not overlap; empty spans
    hold no character and so no token."""
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    last = np.maximum(off[:, 0], off[:, 1] - 1)
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    nonempty = np.flatnonzero(sp[:, 1] > sp[:, 0])
    if not len(nonempty):
        return np.full(len(off), -1)
    order = nonempty[np.argsort(sp[nonempty, 0], kind="stable")]
    i = np.searchsorted(sp[order, 0], last, side="right") - 1  # last span starting <= last
    j = np.clip(i, 0, None)
    return np.where((i >= 0) & (last < sp[order, 1][j]), order[j], -1)
