import json
from pathlib import Path

import pandas as pd

from mmrpt.cli import main


def test_score_then_mask(tiny_project: Path):
    assert main(["data"]) == 0
    assert main(["warmup", "-S", "warmup.max_steps=10"]) == 0
    assert main(["score"]) == 0
    table = pd.read_parquet(tiny_project / "data/scores/scores.parquet")
    n_sentences = json.loads((tiny_project / "metrics/data.json").read_text())
    assert len(table) == sum(n_sentences[f"{s}/n_sentences"]
                             for s in ("train", "dev", "test_iid", "test_counter"))
    assert table.d_vis.between(0, 1).all()
    assert table[table.split != "train"].d_cf.notna().all()  # train only on request
    assert (table.peak_start >= table.start).all() and (table.peak_end <= table.end).all()
    metrics = json.loads((tiny_project / "metrics/score.json").read_text())
    for key in ("auroc", "auroc_counterfactual", "auroc_layer_0", "dev/auroc_layer_1", "heads"):
        assert key in metrics
    assert sum(len(h) for h in metrics["heads"].values()) == 2  # top_heads

    # resume: a finished shard is reused, not recomputed
    shards = sorted((tiny_project / "data/scores/shards").glob("train-*.parquet"))
    assert len(shards) == 4  # 64 records / shard_size 20
    stamp = shards[0].stat().st_mtime_ns
    shards[-1].unlink()
    assert main(["score"]) == 0
    assert shards[0].stat().st_mtime_ns == stamp and shards[-1].exists()
    again = pd.read_parquet(tiny_project / "data/scores/scores.parquet")
    pd.testing.assert_frame_equal(again, table)

    assert main(["score", "-S", "score.counterfactual_train=true"]) == 0
    assert main(["mask", "-S", "mask.selectors=[attention, random, counterfactual, label]",
                 "-S", "score.counterfactual_train=true"]) == 0
    m = json.loads((tiny_project / "metrics/mask.json").read_text())
    for selector in ("attention", "random", "counterfactual", "label"):
        k = f"{selector}/train"
        assert m[f"{k}/n_records"] == (m[f"{k}/n_masked"] + m[f"{k}/n_no_mask"]
                                       + m[f"{k}/n_too_short"] + m[f"{k}/n_unscored"])
        lines = (tiny_project / f"data/masked/{selector}/train.jsonl").read_text().splitlines()
        assert len(lines) == m[f"{k}/n_masked"] > 0
        sample = json.loads(lines[0])
        assert sample["masked_caption"].count("[1]") == 1
        assert sample["answer"].startswith("[1] ")
        assert sample["prompt"].endswith(sample["masked_caption"])
    assert m["label/train/precision"] == 1.0
    assert (tiny_project / "data/masked/attention/gallery.html").stat().st_size > 1000
    assert main(["mask", "-S", "mask.granularity=span"]) == 0
    lines = (tiny_project / "data/masked/attention/train.jsonl").read_text().splitlines()
    sample = json.loads(lines[0])
    assert all(" " not in t.strip() for t in sample["targets"])  # single words
