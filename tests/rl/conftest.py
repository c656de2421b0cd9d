"""Shared fixture of the GRPO tests: a tiny VLM and label-masked synthetic-world samples."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mmrpt.config import MaskParams
from mmrpt.data import world
from mmrpt.masking.select import label_masked_sample
from mmrpt.modeling.loader import load_vlm
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
from tests.tiny_params import TINY


@pytest.fixture
def tiny_rl(tmp_path: Path, monkeypatch):
    """A tiny VLM and label-masked synthetic-world samples (no pipeline run needed)."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "world"
    records = list(
        world.generate_split(
            "train", 12, root, seed=0, image_size=112, max_objects=3, prior_strength=0.7
        )
    )
    rng = np.random.default_rng(0)
    samples = [
        s for r in records if (s := label_masked_sample(r, 2, MaskParams().instruction, rng))
    ]
    spec = TinySpec(**TINY["model"]["tiny"], image_size=112)
    texts = world.vocabulary_text() * 20 + [s.prompt for s in samples]
    model, processor = load_vlm(
        build_tiny_vlm(texts, spec, tmp_path / "model"), dtype=torch.float32
    )
    return model, processor, samples[:8], root
