"""Dev-split check of how counterfactual loss rises combine over replacements (docs/LOG.md).
Run from a workspace that holds models/warmup and data/world.

    python docs/experiments/cf_reduce.py
"""

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from mmrpt.data.records import read_manifest
from mmrpt.modeling.lm import sentence_losses
from mmrpt.modeling.loader import load_vlm
from mmrpt.pretrain.warmup import open_rgb

torch.set_num_threads(1)
model, proc = load_vlm("models/warmup", dtype=torch.float32)
for split in ["dev", "test_iid"]:
    recs = read_manifest(f"data/world/{split}.jsonl")
    imgs = [open_rgb("data/world/" + r.image) for r in recs]
    caps = [r.caption for r in recs]
    spans = [[(s.start, s.end) for s in r.sentences] for r in recs]
    labels = np.concatenate([[s.label for s in r.sentences] for r in recs])
    true = sentence_losses(model, proc, imgs, caps, spans, "Describe the image.", 32)
    rises = []
    for k in range(1, 6):
        alt = sentence_losses(
            model, proc, imgs[k:] + imgs[:k], caps, spans, "Describe the image.", 32
        )
        rises.append(
            np.concatenate(
                [
                    (a[:, 0] - t[:, 0]) / np.maximum(t[:, 1], 1)
                    for a, t in zip(alt, true, strict=True)
                ]
            )
        )
    R = np.stack(rises)
    for n in (1, 3, 5):
        print(
            split,
            n,
            "mean",
            round(roc_auc_score(labels, R[:n].mean(0)), 3),
            "max",
            round(roc_auc_score(labels, R[:n].max(0)), 3),
            "median",
            round(roc_auc_score(labels, np.median(R[:n], 0)), 3),
        )
