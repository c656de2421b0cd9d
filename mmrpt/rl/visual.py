"""Image-text similarity for the reward's visual term where there is no scene to verify
against (real data): a CLIP- or SigLIP-style dual encoder (transformers ``AutoModel`` +
``AutoProcessor``) from a local folder or hub id (``rl.visual_model``).

Score of a (image, sentence) pair in [0, 1]: SigLIP (a model with ``logit_bias``) gives
sigmoid(scale * cos + bias), its own probability that the pair matches; CLIP gives
CLIPScore, clip(2.5 * cos, 0, 1) (Hessel et al. 2021: w = 2.5, negatives clipped). GRPO only
sees differences within a group, so the scale matters less than the order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageTextScorer = Callable[[Sequence[Image.Image], Sequence[str]], np.ndarray]


@lru_cache(maxsize=2)
def image_text_scorer(path: str) -> ImageTextScorer:
    """``score(images, texts) -> (n,)`` for the pairs (images[i], texts[i]) (loaded once)."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(path)
    siglip = hasattr(model, "logit_bias")
    padding = {"padding": "max_length", "max_length": 64} if siglip else {"padding": True}

    @torch.no_grad()
    def score(images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        batch = processor(
            text=list(texts), images=list(images), return_tensors="pt", truncation=True, **padding
        )
        out = model(**batch)
        cos = (F.normalize(out.image_embeds, dim=-1) * F.normalize(out.text_embeds, dim=-1)).sum(-1)
        if siglip:
            p = torch.sigmoid(cos * model.logit_scale.exp() + model.logit_bias)
        else:
            p = (2.5 * cos).clamp(0, 1)
        return p.float().numpy()

    return score
