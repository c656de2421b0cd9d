"""Print the headline numbers of the pipeline's metrics files and the arms comparison report
(what `make main` ends with: ``python -m mmrpt summary``)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from mmrpt.progress import interactive

HEADLINES = {
    "data": ["train/n_records", "train/n_vision_dependent", "train/n_vision_independent"],
    "warmup": [
        "steps",
        "loss_true_image",
        "loss_shuffled_image",
        "image_gain",
        "image_gain_independent",
    ],
    "score": [
        "heads",
        "auroc",
        "auroc_counterfactual",
        "auroc_paper_band",
        "auroc_layer_0",
        "auroc_layer_1",
        "auroc_layer_2",
        "auroc_layer_3",
    ],
    "mask": [
        "attention/train/n_masked",
        "attention/train/n_no_mask",
        "attention/train/masks_per_sample",
        "attention/test_iid/precision",
        "attention/test_iid/recall",
    ],
    "primer": ["warmup_exact_match", "primer_exact_match"],
}


def print_summary(metrics_dir: str = "metrics", report_md: str = "reports/report.md") -> None:
    # off a terminal rich assumes 80 columns and cuts names: a log gets the full width
    console = Console() if interactive() else Console(width=160)
    table = Table(title="MMRPT pipeline: headline metrics")
    for col in ("stage", "metric", "value"):
        table.add_column(col)
    for stage, keys in HEADLINES.items():
        path = Path(metrics_dir) / f"{stage}.json"
        if not path.exists():
            continue
        metrics = json.loads(path.read_text())
        for key in keys:
            if key in metrics:
                v = metrics[key]
                table.add_row(stage, key, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    rl = Path(metrics_dir) / "rl.json"
    if rl.exists():
        data = json.loads(rl.read_text())
        arms = Table(title="Held-out masked-span exact match by arm (equal steps and samples)")
        for col in ("arm", "test_iid", "test_counter"):
            arms.add_column(col)
        for name, key in (
            ("warmup (caption continuation)", "warmup_exact_match"),
            ("primer", "primer_exact_match"),
        ):
            if data.get(key) is not None:
                arms.add_row(name, f"{data[key]:.3f}", "")
        for arm, m in data.items():
            if isinstance(m, dict) and "exact_match" in m:
                arms.add_row(
                    arm,
                    f"{m['exact_match']:.3f}",
                    f"{m.get('exact_match_test_counter', float('nan')):.3f}",
                )
        console.print(arms)
    if Path(report_md).exists():
        console.print(Markdown(Path(report_md).read_text()))
