"""Sentence-level dependency scores over a batch: the paper's attention score and our
counterfactual score (loss rise when the true image is swapped for other images).

Key roles for the attention score's denominator, per position of an encoded example:
``image`` (image placeholder tokens), ``sink`` (position 0, the attention sink), ``prompt``
(every other token before the caption: system prompt, chat template, vision start/end,
instruction) and ``caption`` (the caption's own tokens). ``text_keys`` picks which of sink,
prompt, caption count as text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmrpt.modeling.encode import Encoded, collate, encode, sentence_of_tokens
from mmrpt.modeling.lm import sentence_losses
from mmrpt.scoring.attention import visual_shares

TEXT_KEY_ROLES = ("sink", "prompt", "caption")


def key_masks(
    encs: Sequence[Encoded], width: int, image_token_id: int, text_keys: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) boolean masks of image keys and of the keys that count as text."""
    unknown = set(text_keys) - set(TEXT_KEY_ROLES)
    if unknown:
        raise ValueError(f"unknown text key roles {sorted(unknown)}; known: {TEXT_KEY_ROLES}")
    image = torch.zeros(len(encs), width, dtype=torch.bool)
    text = torch.zeros(len(encs), width, dtype=torch.bool)
    for b, e in enumerate(encs):
        ids = torch.tensor(e.input_ids)
        is_img = ids == image_token_id
        image[b, : len(ids)] = is_img
        roles = torch.zeros(len(ids), dtype=torch.bool)
        if "prompt" in text_keys:
            roles[1 : e.target_start] = True
        if "sink" in text_keys:
            roles[0] = True
        if "caption" in text_keys:
            roles[e.target_start :] = True
        text[b, : len(ids)] = roles & ~is_img
    return image, text


@torch.no_grad()
def attention_scores(
    model,
    processor,
    cap,
    images,
    captions: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    prompt: str,
    image_token_id: int,
    text_keys: Sequence[str],
) -> list[np.ndarray]:
    """One teacher-forced pass for a batch. Per example: (scores, peaks) where scores is
    (L, n_sentences), D_vis per captured layer (mean over the sentence's tokens; NaN for a
    sentence without tokens), and peaks gives per sentence the caption char span of the word
    holding the token with the highest visual share (mean over layers)."""
    device = next(model.parameters()).device
    encs = [encode(processor, im, prompt, c) for im, c in zip(images, captions, strict=True)]
    batch = collate(encs, processor.tokenizer.pad_token_id)
    batch.pop("labels")
    width = batch["input_ids"].shape[1]
    image_keys, text_mask = key_masks(encs, width, image_token_id, text_keys)
    lo = min(e.target_start for e in encs)
    hi = max(len(e.input_ids) for e in encs)
    batch = {k: v.to(device) for k, v in batch.items()}
    shares = (
        visual_shares(model, batch, cap, image_keys.to(device), text_mask.to(device), lo, hi)
        .float()
        .cpu()
        .numpy()
    )  # (L, B, hi - lo)
    out = []
    for b, e in enumerate(encs):
        sent = sentence_of_tokens(e.offsets, spans[b])
        rows = shares[:, b, e.target_start - lo : e.target_start - lo + len(sent)]
        n, inside = len(spans[b]), sent >= 0
        count = np.bincount(sent[inside], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):  # no tokens: NaN
            scores = (
                np.stack([np.bincount(sent[inside], weights=r[inside], minlength=n) for r in rows])
                / count
            )
        # per sentence, its token with the highest share (the first of equals)
        token_share = rows.mean(axis=0)
        idx = np.flatnonzero(inside)
        by_sentence = idx[np.lexsort((idx, -token_share[idx], sent[idx]))]
        first = by_sentence[np.r_[True, np.diff(sent[by_sentence]) != 0]] if len(idx) else idx
        top = dict(zip(sent[first].tolist(), first.tolist(), strict=True))
        peaks = [
            word_span(captions[b], *e.offsets[top[s]], spans[b][s]) if s in top else spans[b][s]
            for s in range(n)
        ]
        out.append((scores, peaks))
    return out


def word_span(text: str, a: int, z: int, within: tuple[int, int]) -> tuple[int, int]:
    """Grow the char span [a, z) to whole words (letters, digits, ' and -) inside ``within``."""
    lo, hi = within
    while a < z and text[a].isspace():
        a += 1

    def is_word(ch: str) -> bool:
        return ch.isalnum() or ch in "'-"

    while a > lo and is_word(text[a - 1]):
        a -= 1
    while z < hi and is_word(text[z]):
        z += 1
    return (a, z) if z > a else within


def token_counts(processor, captions, spans) -> list[np.ndarray]:
    tok = processor.tokenizer
    out = []
    for c, sp in zip(captions, spans, strict=True):
        offsets = tok(
            c, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
        )["offset_mapping"]  # as mmrpt.modeling.encode tokenises the caption
        sent = sentence_of_tokens(offsets, sp)
        out.append(np.bincount(sent[sent >= 0], minlength=len(sp)))
    return out


def counterfactual_scores(
    model,
    processor,
    images,
    others: Sequence[Sequence],
    captions,
    spans,
    prompt: str,
    batch_size: int,
    reduce: str = "max",
) -> list[np.ndarray]:
    """Per example: (n_sentences,) mean per-token loss rise when the image is replaced by
    each of ``others[k]`` (k replacements), reduced over replacements by ``reduce``: "mean",
    or "max" (our default, chosen on the dev split: a replacement that happens to agree with
    the sentence, e.g. the same object count, shows no rise and drags the mean down)."""
    true = sentence_losses(model, processor, images, captions, spans, prompt, batch_size)
    rises = []
    for swap in others:
        alt = sentence_losses(model, processor, swap, captions, spans, prompt, batch_size)
        rises.append(
            [(a[:, 0] - t[:, 0]) / np.maximum(t[:, 1], 1) for a, t in zip(alt, true, strict=True)]
        )
    fn = {"mean": np.mean, "max": np.max}[reduce]
    return [fn([r[i] for r in rises], axis=0) for i in range(len(captions))]
