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

import numpy as np

from mmrpt.masking.samples import MaskedSample


def caption_tau(scores: np.ndarray, k: float) -> float:
    """Per-caption threshold: mean + k * std over the caption's scored sentences."""
    valid = scores[~np.isnan(scores)]
    return float(valid.mean() + k * valid.std()) if len(valid) else float("inf")


def select_by_score(scores: np.ndarray, tau: float, max_masks: int) -> list[int]:
    """Sentences with score >= tau, at most max_masks (highest first) and at most n - 1."""
    limit = min(max_masks, len(scores) - 1)
    cand = [
        i
        for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        if not np.isnan(scores[i]) and scores[i] >= tau
    ]
    return sorted(int(i) for i in cand[: max(limit, 0)])


def select_random(n_sentences: int, n_pick: int, rng: np.random.Generator) -> list[int]:
    n_pick = min(n_pick, n_sentences - 1)
    if n_pick <= 0:
        return []
    return sorted(int(i) for i in rng.choice(n_sentences, size=n_pick, replace=False))


def select_by_label(
    labels: Sequence[int | None], max_masks: int, rng: np.random.Generator
) -> list[int]:
    dep = [i for i, lab in enumerate(labels) if lab == 1]
    n_pick = min(max_masks, len(labels) - 1, len(dep))
    if n_pick <= 0:
        return []
    return sorted(int(i) for i in rng.choice(dep, size=n_pick, replace=False))


def label_masked_sample(record, max_masks: int, instruction: str, rng: np.random.Generator):
    """The masked sample (as the mask stage writes it) that hides the record's true
    vision-dependent sentences: the label oracle, no scoring model needed (benchmarks and
    tests build RL data this way). None if no sentence qualifies."""
    chosen = select_by_label([s.label for s in record.sentences], max_masks, rng)
    if not chosen:
        return None
    spans = [(record.sentences[i].start, record.sentences[i].end) for i in chosen]
    return MaskedSample.build(record, spans, chosen, [1.0] * len(chosen), instruction)
