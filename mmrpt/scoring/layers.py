"""Which decoder layers D_vis reads, and how well a score separates labelled sentences."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def band_layers(num_layers: int, band: tuple[float, float]) -> list[int]:
    """Layers whose depth fraction l / num_layers lies in [lo, hi); at least one layer.

    e.g. 28 layers, (0.5, 0.75) -> 14..20; 4 layers -> [2]."""
    lo, hi = band
    first = min(math.floor(lo * num_layers), num_layers - 1)
    last = max(first + 1, math.ceil(hi * num_layers))
    return list(range(first, min(last, num_layers)))


def auroc(scores: Sequence[float], labels: Sequence[int | None]) -> float:
    """AUROC of scores against binary labels, ignoring unlabelled or NaN entries (NaN if one
    class is missing)."""
    s = np.asarray(scores, dtype=float)
    y = np.array([np.nan if v is None else v for v in labels], dtype=float)
    keep = ~np.isnan(s) & ~np.isnan(y)
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    return float(roc_auc_score(y[keep], s[keep]))
