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
        for label, name, colour in (
            (1, "vision-dependent", "tab:red"),
            (0, "vision-independent", "tab:blue"),
        ):
            vals = table.loc[table.label == label, col].dropna()
            if len(vals):
                ax.hist(vals, bins=40, alpha=0.6, label=f"{name} (n={len(vals)})", color=colour)
        unlabelled = table.loc[table.label.isna(), col].dropna()
        if len(unlabelled):
            ax.hist(unlabelled, bins=40, alpha=0.6, label="unlabelled", color="grey")
        ax.set_xlabel(
            {
                "d_vis": "D_vis (attention share on image)",
                "d_cf": "counterfactual loss rise (nats/token)",
            }[col]
        )
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


def bar_plots(labels, values: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """One bar chart per column of ``values`` (one bar per label), stacked vertically."""
    labels = [str(x) for x in labels]
    n = len(values.columns)
    fig, axes = plt.subplots(
        n, 1, figsize=(max(5, 0.6 * len(labels)), 2.6 * n + 0.6), squeeze=False
    )
    for ax, col in zip(axes[:, 0], values.columns, strict=True):
        ax.bar(labels, values[col], color="tab:blue")
        ax.set_ylabel(col)
        ax.tick_params(axis="x", rotation=60)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def grouped_bars(
    summary: pd.DataFrame, labels: dict[str, str], arms, path: str | Path, title: str = ""
) -> Path:
    """One group of bars per metric, one bar per arm, error bars = std over seeds."""
    metrics = [m for m in labels if m in set(summary.metric)]
    arms = [a for a in arms if a in set(summary.arm)]
    width = 0.8 / max(len(arms), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.8))
    x = np.arange(len(metrics))
    for i, arm in enumerate(arms):
        part = summary[summary.arm == arm].set_index("metric").reindex(metrics)
        ax.bar(
            x + (i - (len(arms) - 1) / 2) * width,
            part["mean"],
            width,
            yerr=part["std"].fillna(0),
            label=arm,
            capsize=2,
        )
    ax.set_xticks(x, [labels[m] for m in metrics], rotation=25, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def reward_curves(curves: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Mean GRPO reward per logged step, one line per rl run (arm-seed)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, df in curves.items():
        ax.plot(df["step"], df["reward"], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=8)
    return _save(fig, path)


def sft_curves(study: dict, path: str | Path) -> Path:
    """Accuracy vs SFT steps per arm: a row per caption-bias value, a column per metric
    (iid probes; prior-conflict colour probes), step 0 = the arm's model before SFT."""
    metrics = {
        "sft_iid": "iid probes (question form)",
        "sft_conflict": "prior-conflict colour (question form)",
    }
    fig, axes = plt.subplots(
        len(study), len(metrics), figsize=(5 * len(metrics), 3.2 * len(study)), squeeze=False
    )
    for row, (bias, s) in enumerate(study.items()):
        for col, (metric, title) in enumerate(metrics.items()):
            ax = axes[row, col]
            for arm, points in s["curves"][metric].items():
                ax.plot(
                    [p["steps"] for p in points],
                    [p["accuracy"] for p in points],
                    marker="o",
                    label=arm,
                )
            refs = s["metrics"][metric]["references"]
            ax.axhline(
                refs["prior_only"],
                color="grey",
                linestyle="--",
                linewidth=1,
                label="prior-only answerer",
            )
            ax.set_title(f"caption bias {bias}: {title}", fontsize=9)
            ax.set_xlabel("SFT steps")
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
    return _save(fig, path)


def forest(study: dict, path: str | Path) -> Path:
    """The paired differences (a - b) with their 95% intervals, one line per (caption bias,
    comparison, metric), with the zero line."""
    rows = [
        (f"bias {bias}: {pair} ({metric})", c)
        for bias, s in study.items()
        for pair, per_metric in s["comparisons"].items()
        for metric, c in per_metric.items()
    ]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    for yi, (_, c) in zip(y, rows, strict=True):
        colour = "tab:red" if c["lo"] > 0 or c["hi"] < 0 else "tab:grey"
        ax.plot([c["lo"], c["hi"]], [yi, yi], color=colour)
        ax.plot(c["diff"], yi, "o", color=colour)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [label for label, _ in rows], fontsize=7)
    ax.set_xlabel("difference in accuracy (a - b), 95% CI; red: effect detected")
    ax.set_title("paired differences between arms")
    return _save(fig, path)
