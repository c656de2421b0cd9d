"""Teacher-forced caption losses per sentence, with the true image or any other image.

The same pass serves the warmup check (does the model use the image?) and the counterfactual
dependency score (how much does a sentence's loss rise when the image is swapped?). Memory:
the model runs to its hidden states and only the caption positions' target log-probs are
computed, ``chunk`` positions at a time (encode.target_losses): no (B, T, V) logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mmrpt.modeling.encode import collate, encode, sentence_of_tokens, target_losses
from mmrpt.progress import bar


@torch.no_grad()
def sentence_losses(
    model,
    processor,
    images: Sequence[Image.Image],
    captions: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    prompt: str,
    batch_size: int = 32,
    progress: bool = False,
    chunk: int | None = None,
) -> list[np.ndarray]:
    """For each example, an array (n_sentences, 2) of [summed token loss, token count]."""
    model.eval()
    device = next(model.parameters()).device
    pad_id = processor.tokenizer.pad_token_id
    out: list[np.ndarray] = []
    starts = range(0, len(captions), batch_size)
    for i in bar(starts, desc="caption loss", enabled=progress):
        encs = [
            encode(processor, images[j], prompt, captions[j])
            for j in range(i, min(i + batch_size, len(captions)))
        ]
        batch = collate(encs, pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        losses = target_losses(model, batch, labels, chunk).cpu().numpy()
        for b, e in enumerate(encs):
            sent = sentence_of_tokens(e.offsets, spans[i + b])
            tok_loss = losses[b, e.target_start : e.target_start + len(sent)]
            inside, n = sent >= 0, len(spans[i + b])
            out.append(
                np.stack(
                    [
                        np.bincount(sent[inside], weights=tok_loss[inside], minlength=n),
                        np.bincount(sent[inside], minlength=n).astype(float),
                    ],
                    axis=1,
                )
            )
    return out
