"""Print the headline numbers of the pipeline's metrics files (what `make main` ends with).

    python -m mmrpt.report.summary [metrics_dir]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

HEADLINES = {
    "data": ["train/n_records", "train/n_vision_dependent", "train/n_vision_independent"],
    "warmup": ["steps", "loss_true_image", "loss_shuffled_image", "image_gain",
               "image_gain_independent"],
    "score": ["heads", "auroc", "auroc_counterfactual", "auroc_paper_band",
              "auroc_layer_0", "auroc_layer_1", "auroc_layer_2", "auroc_layer_3"],
    "mask": ["train/n_masked", "train/n_no_mask", "train/masks_per_sample", "test_iid/precision",
             "test_iid/recall"],
}


def main(metrics_dir: str = "metrics") -> None:
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
    Console().print(table)


if __name__ == "__main__":
    main(*sys.argv[1:])
