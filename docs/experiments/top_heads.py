"""Dev-split check of how many of the best (layer, head) pairs D_vis should average (LOG)."""

from pathlib import Path

import numpy as np
import torch

from mmrpt.config import load_params
from mmrpt.data.records import read_manifest
from mmrpt.modeling.loader import load_vlm
from mmrpt.scoring.layers import auroc
from mmrpt.stages.score import head_scores

params = load_params()
model, processor = load_vlm("models/warmup", dtype=torch.float32)
model.eval()
res = {}
for split in ("dev", "test_iid"):
    recs = read_manifest(f"data/world/{split}.jsonl")[:300]
    res[split] = head_scores(model, processor, recs, Path("data/world"), params)
scores, labels = res["dev"]
L, H, _ = scores.shape
dev = np.array([[auroc(scores[la, h], labels) for h in range(H)] for la in range(L)])
order = np.argsort(-dev.ravel())
for k in range(1, 9):
    pick = order[:k]
    for split, (s, lab) in res.items():
        combo = np.mean([s[p // H, p % H] for p in pick], axis=0)
        print(k, split, round(auroc(combo, lab), 3), end="  ")
    print([(int(p // H), int(p % H)) for p in pick])
