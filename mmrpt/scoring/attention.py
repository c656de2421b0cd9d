"""The paper's visual-dependency score D_vis, computed from the chosen layers only.

    D_vis(s) = 1/(|s||L|) * sum_{l in L} sum_{t in s} a_l(t, image) / (a_l(t, image) + a_l(t, text))

where a_l(t, K) is the attention mass (heads averaged) that query token t puts on the key set K
in decoder layer l. Which keys count as "text" is the caller's choice (a boolean key mask).

How: a custom attention function is registered with transformers' AttentionInterface. Every
layer computes its output with SDPA as usual; the chosen layers additionally compute softmax
weights for the caption query rows only, (H, Q, T) with Q << T, one example at a time, reduce
them at once to the image and text masses, and drop them; the forward pass stops at the last
chosen layer's attention weights (its attention output and MLP, later layers, the final norm
and the lm_head cannot change D_vis). Nothing of shape (T, T) is kept, no other layer pays
anything, and `output_attentions=True` (which needs eager attention in every layer and keeps
all layers' (B, H, T, T) weights) is never used. Departure from the textbook eager path: the
weights are recomputed from q and k rather than taken from the kernel that made the output.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "mmrpt_capture"


Heads = Sequence[int] | Mapping[int, Sequence[int]] | None


@dataclass
class _Capture:
    heads: Heads
    per_head: bool = False
    image_keys: torch.Tensor | None = None  # (B, T) bool
    text_keys: torch.Tensor | None = None  # (B, T) bool
    q_lo: int = 0
    q_hi: int = 0
    last_layer: int = -1  # the forward pass stops after this layer's attention
    shares: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, Q)


class _Done(Exception):
    """Raised after the last chosen layer's shares are recorded: nothing later is needed."""


def _capture_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    cap: _Capture | None = getattr(module, "_mmrpt_capture", None)
    if cap is not None and cap.image_keys is not None:
        heads = cap.heads.get(module.layer_idx) if isinstance(cap.heads, Mapping) else cap.heads
        cap.shares[module.layer_idx] = _visual_share(
            query,
            key,
            attention_mask,
            scaling,
            cap.q_lo,
            cap.q_hi,
            cap.image_keys,
            cap.text_keys,
            heads,
            cap.per_head,
        )
        if module.layer_idx == cap.last_layer:
            raise _Done  # this layer's attention output is never used: no SDPA for it
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    return out, None


def _visual_share(query, key, mask, scaling, lo, hi, image_keys, text_keys, heads, per_head=False):
    """query (B, H, T, d), key (B, Hkv, T, d), mask (B, 1, T, T) boolean (True = attend, as
    SDPA's), additive float, or None (causal, no padding) -> (B, hi - lo): image mass /
    (image + text mass) of query rows lo..hi, heads averaged (or (B, H', hi - lo) per head
    with ``per_head``). One example at a time: its (H, Q, T) scores stay small enough for the
    CPU cache, the whole batch's did not (docs/PERF.md: 0.148 -> 0.090 s for two layers)."""
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    q = query[:, :, lo:hi]
    if heads is not None:
        q, k = q[:, list(heads)], k[:, list(heads)]
    q = q.float() * (scaling or q.shape[-1] ** -0.5)  # scale the (Q, d) side, not (Q, T)
    k = k.float().transpose(-1, -2)
    roles = torch.stack([image_keys, text_keys], dim=-1).to(q.dtype)  # (B, T, 2)
    t = torch.arange(k.shape[-1], device=q.device)
    shares = []
    for b in range(q.shape[0]):
        scores = q[b] @ k[b]  # (H, Q, T)
        if mask is None:
            scores.masked_fill_(t[None, :] > t[lo:hi, None], float("-inf"))
        elif mask.dtype == torch.bool:
            scores.masked_fill_(~mask[b, :, lo:hi, : k.shape[-1]], float("-inf"))
        else:
            scores += mask[b, :, lo:hi, : k.shape[-1]].float()
        img, txt = (torch.softmax(scores, dim=-1) @ roles[b]).unbind(-1)  # (H, Q) each
        shares.append(img / (img + txt).clamp_min(1e-30))
    share = torch.stack(shares)
    return share if per_head else share.mean(1)


AttentionInterface.register(NAME, _capture_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def text_decoder_layers(model) -> list[torch.nn.Module]:
    """The self-attention modules of the language decoder, in order."""
    attn = [
        m
        for name, m in model.named_modules()
        if name.endswith("self_attn") and hasattr(m, "layer_idx") and "visual" not in name
    ]
    if not attn:
        raise ValueError(f"{type(model).__name__}: no decoder self_attn modules found")
    return attn


@contextmanager
def capture(
    model, layers: Sequence[int], heads: Heads = None, per_head: bool = False
) -> Iterator[_Capture]:
    """Within the block, forward passes record visual shares of the chosen layers, averaged
    over ``heads`` (all heads if None; a mapping gives each layer its own heads). With
    ``per_head`` every (layer, head) pair acts as one layer, layer-major."""
    attn = text_decoder_layers(model)
    bad = [layer for layer in layers if not 0 <= layer < len(attn)]
    if bad:
        raise ValueError(f"score layers {bad} out of range: the model has {len(attn)} layers")
    cap = _Capture(heads=heads, per_head=per_head, last_layer=max(layers))
    text_cfg = model.config.get_text_config()
    previous = text_cfg._attn_implementation
    for layer in layers:
        attn[layer]._mmrpt_capture = cap
    text_cfg._attn_implementation = NAME
    try:
        yield cap
    finally:
        text_cfg._attn_implementation = previous
        for layer in layers:
            del attn[layer]._mmrpt_capture


@torch.no_grad()
def visual_shares(
    model,
    batch: dict,
    cap: _Capture,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
    q_lo: int,
    q_hi: int,
) -> torch.Tensor:
    """One forward pass; returns (L, B, q_hi - q_lo) visual shares, layers in capture order
    ((L * H, B, q_hi - q_lo) with per-head capture)."""
    cap.image_keys, cap.text_keys, cap.q_lo, cap.q_hi = image_keys, text_keys, q_lo, q_hi
    cap.shares.clear()
    try:
        model(**batch)
    except _Done:
        pass
    finally:
        cap.image_keys = cap.text_keys = None
    shares = torch.stack([cap.shares[k] for k in sorted(cap.shares)])
    if cap.per_head:  # (L, B, H, Q) -> (L * H, B, Q)
        shares = shares.permute(0, 2, 1, 3).flatten(0, 1)
    return shares
