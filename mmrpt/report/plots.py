"""Plots people would rather look at than read (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def score_histogram(table: pd.DataFrame, path: str | Path) -> Path:
    """D_vis (and the counterfactual score, if present) histograms split by true label."""
    cols = [c for c in ("d_vis", "d_cf") if c in table and table[c].notna().any()]
    fig, axes = plt.subplots(1, len(cols), figsize=(5 * len(cols), 3.5), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for label, name, colour in ((1, "vision-dependent", "tab:red"),
                                    (0, "vision-independent", "tab:blue")):
            vals = table.loc[table.label == label, col].dropna()
            if len(vals):
                ax.hist(vals, bins=40, alpha=0.6, label=f"{name} (n={len(vals)})", color=colour)
        unlabelled = table.loc[table.label.isna(), col].dropna()
        if len(unlabelled):
            ax.hist(unlabelled, bins=40, alpha=0.6, label="unlabelled", color="grey")
        ax.set_xlabel({"d_vis": "D_vis (attention share on image)",
                       "d_cf": "counterfactual loss rise (nats/token)"}[col])
        ax.set_ylabel("sentences")
        ax.legend(fontsize=8)
    return _save(fig, path)


def head_heatmap(auroc: np.ndarray, path: str | Path) -> Path:
    """AUROC of D_vis per (layer, head): where the visual heads are."""
    fig, ax = plt.subplots(figsize=(1 + 0.6 * auroc.shape[1], 1 + 0.5 * auroc.shape[0]))
    im = ax.imshow(auroc, vmin=0, vmax=1, cmap="RdBu_r")
    for (i, j), v in np.ndenumerate(auroc):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("AUROC of D_vis vs labels")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def bar_plot(labels, values, ylabel: str, path: str | Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(labels)), 3.5))
    ax.bar([str(x) for x in labels], values, color="tab:blue")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=60)
    return _save(fig, path)
