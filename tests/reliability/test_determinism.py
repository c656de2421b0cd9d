"""Determinism: the same params and seed give identical results twice on CPU.

A second project runs data, warmup (10 steps) and score from scratch and is compared with the
session's template run: the metrics files must be equal exactly (not within a tolerance), and
so must the score table and the warmed-up weights behind them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from tests.reliability.conftest import run_stages


def test_same_seed_twice_gives_identical_metrics(scored_template: Path, tmp_path: Path):
    again = run_stages(tmp_path)
    for stage in ("data", "warmup", "score"):
        a = json.loads((scored_template / f"metrics/{stage}.json").read_text())
        b = json.loads((again / f"metrics/{stage}.json").read_text())
        assert a == b, stage
    pd.testing.assert_frame_equal(
        pd.read_parquet(scored_template / "data/scores/scores.parquet"),
        pd.read_parquet(again / "data/scores/scores.parquet"),
        check_exact=True,
    )
    wa = load_file(scored_template / "models/warmup/model.safetensors")
    wb = load_file(again / "models/warmup/model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (scored_template / "data/world/train.jsonl").read_bytes() == (
        again / "data/world/train.jsonl"
    ).read_bytes()
