"""Which caption parts to hide: adaptive thresholds, the selectors, and the masked sample.

A sentence is vision-dependent iff its score >= tau, with tau either per caption
(mean + k * std of that caption's sentence scores) or a corpus quantile. At most ``max_masks``
sentences are hidden per caption (highest scores first), and never all of them: at least one
sentence stays visible as context. The ``random`` selector (control arm) hides as many
sentences as the score-based selector would, chosen uniformly; ``label`` hides true
vision-dependent sentences (an oracle for diagnostics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


def caption_tau(scores: np.ndarray, k: float) -> float:
    """Per-caption threshold: mean + k * std over the caption's scored sentences."""
    valid = scores[~np.isnan(scores)]
    return float(valid.mean() + k * valid.std()) if len(valid) else float("inf")


def select_by_score(scores: np.ndarray, tau: float, max_masks: int) -> list[int]:
    """Sentences with score >= tau, at most max_masks (highest first) and at most n - 1."""
    limit = min(max_masks, len(scores) - 1)
    cand = [i for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
            if not np.isnan(scores[i]) and scores[i] >= tau]
    return sorted(int(i) for i in cand[: max(limit, 0)])


def select_random(n_sentences: int, n_pick: int, rng: np.random.Generator) -> list[int]:
    n_pick = min(n_pick, n_sentences - 1)
    if n_pick <= 0:
        return []
    return sorted(int(i) for i in rng.choice(n_sentences, size=n_pick, replace=False))


def select_by_label(labels: Sequence[int | None], max_masks: int,
                    rng: np.random.Generator) -> list[int]:
    dep = [i for i, lab in enumerate(labels) if lab == 1]
    n_pick = min(max_masks, len(labels) - 1, len(dep))
    if n_pick <= 0:
        return []
    return sorted(int(i) for i in rng.choice(dep, size=n_pick, replace=False))


@dataclass(frozen=True)
class MaskedSample:
    """An RL/SFT example: the caption with numbered placeholders [1], [2], ... and the hidden
    texts in order. ``spans`` are caption char spans of the hidden texts."""

    id: str
    image: str
    caption: str
    masked_caption: str
    targets: list[str]
    spans: list[tuple[int, int]]
    sentences: list[int]
    labels: list[int | None]
    scores: list[float]
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def placeholder(i: int) -> str:
    return f"[{i + 1}]"


def mask_caption(caption: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list[str]]:
    """Replace each (non-overlapping) span by its numbered placeholder, left to right."""
    out, targets, pos = [], [], 0
    for i, (a, b) in enumerate(sorted(spans)):
        if a < pos:
            raise ValueError(f"overlapping mask spans at {a}")
        out += [caption[pos:a], placeholder(i)]
        targets.append(caption[a:b])
        pos = b
    out.append(caption[pos:])
    return "".join(out), targets


def format_answer(targets: Sequence[str]) -> str:
    """The reference answer text: '[1] first hidden text [2] second ...'."""
    return " ".join(f"{placeholder(i)} {t}" for i, t in enumerate(targets))


def label_masked_sample(record, max_masks: int, instruction: str,
                        rng: np.random.Generator) -> dict | None:
    """The masked sample (as the mask stage writes it) that hides the record's true
    vision-dependent sentences: the label oracle, no scoring model needed (benchmarks and
    tests build RL data this way). None if no sentence qualifies."""
    chosen = select_by_label([s.label for s in record.sentences], max_masks, rng)
    if not chosen:
        return None
    spans = [(record.sentences[i].start, record.sentences[i].end) for i in chosen]
    masked, targets = mask_caption(record.caption, spans)
    return MaskedSample(
        id=record.id, image=record.image, caption=record.caption, masked_caption=masked,
        targets=targets, spans=spans, sentences=chosen,
        labels=[record.sentences[i].label for i in chosen], scores=[1.0] * len(chosen),
        meta=record.meta).to_dict() | {"prompt": f"{instruction}\nCaption: {masked}",
                                       "answer": format_answer(targets)}
