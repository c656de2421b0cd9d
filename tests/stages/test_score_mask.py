import json
from pathlib import Path

import pandas as pd

from mmrpt.cli import main


def test_score_then_mask(tiny_project: Path):
    assert main(["data"]) == 0
    assert main(["warmup", "-S", "warmup.max_steps=10"]) == 0
    assert main(["score_heads"]) == 0
    assert main(["score", "--worker", "0"]) == 0 and main(["score_merge"]) == 0
    table = pd.read_parquet(tiny_project / "data/scores/scores.parquet")
    n_sentences = json.loads((tiny_project / "metrics/data.json").read_text())
    assert len(table) == sum(
        n_sentences[f"{s}/n_sentences"] for s in ("train", "dev", "test_iid", "test_counter")
    )
    assert table.d_vis.between(0, 1).all()
    assert table[table.split != "train"].d_cf.notna().all()  # train only on request
    assert (table.peak_start >= table.start).all() and (table.peak_end <= table.end).all()
    metrics = json.loads((tiny_project / "metrics/score.json").read_text())
    for key in ("auroc", "auroc_counterfactual", "auroc_layer_0", "dev/auroc_layer_1", "heads"):
        assert key in metrics
    assert 1 <= sum(len(h) for h in metrics["heads"].values()) <= 8  # k chosen on dev

    # resume: a finished shard is reused, not recomputed
    shards = sorted((tiny_project / "data/scores/workers/0").glob("train-*.parquet"))
    assert len(shards) == 4  # 64 records / shard_size 20
    stamp = shards[0].stat().st_mtime_ns
    shards[-1].unlink()
    assert main(["score", "--worker", "0"]) == 0 and main(["score_merge"]) == 0
    assert shards[0].stat().st_mtime_ns == stamp and shards[-1].exists()
    again = pd.read_parquet(tiny_project / "data/scores/scores.parquet")
    pd.testing.assert_frame_equal(again, table)

    cf = ["-S", "score.counterfactual_train=true"]
    assert main(["score", "--worker", "0", *cf]) == 0 and main(["score_merge", *cf]) == 0
    assert (
        main(
            [
                "mask",
                "-S",
                "mask.selectors=[attention, random, counterfactual, label]",
                "-S",
                "score.counterfactual_train=true",
            ]
        )
        == 0
    )
    m = json.loads((tiny_project / "metrics/mask.json").read_text())
    for selector in ("attention", "random", "counterfactual", "label"):
        k = f"{selector}/train"
        assert m[f"{k}/n_records"] == (
            m[f"{k}/n_masked"] + m[f"{k}/n_no_mask"] + m[f"{k}/n_too_short"] + m[f"{k}/n_unscored"]
        )
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

    # attribute masks: without hide_mentions the caption names the hidden colour elsewhere
    # ("the red circle") in some samples; with it in none
    def leaks(s: dict) -> bool:
        return any(
            f"{t} {s['caption'][b:].split()[0]}" in s["masked_caption"]
            for t, (_, b) in zip(s["targets"], sorted(s["spans"]), strict=True)
        )

    for hide, leaked in (("false", True), ("true", False)):
        args = ["-S", "mask.selectors=[label, random]", "-S", "mask.granularity=attribute"]
        assert main(["mask", *args, "-S", f"mask.hide_mentions={hide}"]) == 0
        path = tiny_project / "data/masked/label/train.jsonl"
        samples = [json.loads(line) for line in path.read_text().splitlines()]
        assert samples and any(map(leaks, samples)) == leaked


def test_choose_heads_picks_k_on_dev():
    import numpy as np

    from mmrpt.config import Params
    from mmrpt.scoring.layers import auroc
    from mmrpt.stages.score_heads import choose_heads

    rng = np.random.default_rng(0)
    labels = [0, 1] * 100
    y = np.array(labels, dtype=float)
    scores = rng.normal(size=(2, 2, 200))
    scores[1, 0] = y + rng.normal(scale=0.8, size=200)  # the best head
    scores[0, 1] = y + rng.normal(scale=0.8, size=200)  # as good, independent noise
    dev = np.array([[auroc(scores[la, h], labels) for h in range(2)] for la in range(2)])
    params = Params()
    assert choose_heads(params, 2, 2, dev, (scores, labels)) == {0: [1], 1: [0]}  # k = 2
    scores[0, 1] = -y  # now only one useful head, and an inverted one
    dev = np.array([[auroc(scores[la, h], labels) for h in range(2)] for la in range(2)])
    assert choose_heads(params, 2, 2, dev, (scores, labels)) == {1: [0]}  # k = 1
    fixed = Params.model_validate({"score": {"top_heads": 3}})
    assert sum(map(len, choose_heads(fixed, 2, 2, dev).values())) == 3
