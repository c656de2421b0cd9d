"""Loading: only the Qwen2-VL / Qwen2.5-VL family is accepted (before the weights are read),
and model.min_pixels / max_pixels bound the processor's image size, also through a model
reference (warmup off)."""

import pytest
from PIL import Image

from mmrpt.modeling.loader import CheckpointError, load_vlm, write_model_ref
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm

SPEC = TinySpec(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    vision_depth=1,
    vision_embed_dim=16,
    vision_heads=2,
    image_size=448,
)


def test_other_model_families_are_refused_with_their_model_type(tmp_path):
    from tests.rl.tiny_clip import build_tiny_clip

    with pytest.raises(CheckpointError, match="model_type 'clip' is not supported.*Qwen2-VL"):
        load_vlm(build_tiny_clip(tmp_path / "clip"))


def test_pixel_bounds_reach_the_processor_and_follow_a_model_ref(tmp_path):
    path = build_tiny_vlm(["a red car. a blue bus."] * 5, SPEC, tmp_path / "m")
    photo = Image.new("RGB", (1000, 700))

    def tokens(processor) -> int:
        grid = processor.image_processor(images=[photo], return_tensors="pt")["image_grid_thw"]
        return int(grid.prod()) // 4  # merge 2x2 patches per token

    _, own = load_vlm(path)
    _, capped = load_vlm(path, max_pixels=28 * 28 * 16)
    assert tokens(own) == 247 and tokens(capped) == 12  # 1000x700 at <= 448^2 px, <= 16 tokens
    ref = write_model_ref(tmp_path / "ref", str(path), min_pixels=None, max_pixels=28 * 28 * 16)
    _, via_ref = load_vlm(ref)
    assert tokens(via_ref) == tokens(capped)
    with pytest.raises(ValueError, match="min_pixels"):
        load_vlm(path, min_pixels=28 * 28 * 64, max_pixels=28 * 28 * 16)
