from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrpt.data import world
from mmrpt.modeling.encode import chat_prompt
from mmrpt.modeling.loader import CheckpointError, image_token_id, load_vlm, settle_tokenizer
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm

SPEC = TinySpec(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    vision_depth=1,
    vision_embed_dim=16,
    vision_heads=2,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    texts = world.vocabulary_text() + ["There are two objects. A small red circle is here."]
    return build_tiny_vlm(texts, SPEC, out / "model")


def test_round_trip_and_generate(tiny_dir: Path):
    assert (tiny_dir / "model.safetensors").exists()
    model, processor = load_vlm(tiny_dir)
    assert type(processor).__name__ == "Qwen2VLProcessor"
    img = Image.new("RGB", (112, 112), (200, 30, 30))
    enc = processor(
        text=[chat_prompt(processor, "Describe the image.")], images=[img], return_tensors="pt"
    )
    assert (enc["input_ids"] == image_token_id(model)).sum() == 16  # 112/14/2 squared
    with torch.no_grad():
        logits_a = model(**enc).logits
    again, _ = load_vlm(tiny_dir)
    with torch.no_grad():
        logits_b = again(**enc).logits
    torch.testing.assert_close(logits_a, logits_b)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert isinstance(processor.tokenizer.decode(out[0]), str)


def test_tokenizer_round_trips_text(tiny_dir: Path):
    _, processor = load_vlm(tiny_dir)
    text = "A large yellow triangle is at the bottom right. Ünïcode ok."
    ids = processor.tokenizer(text, add_special_tokens=False).input_ids
    assert processor.tokenizer.decode(ids) == text


def test_a_processor_saves_the_same_files_after_a_padded_batch(tmp_path: Path, tiny_dir: Path):
    """TRL's GRPO tokenises its prompts with left padding, which stays set on the tokenizer's
    backend and went into tokenizer.json: a resumed run (no batch yet) saved another file."""
    _, fresh = load_vlm(tiny_dir)
    _, used = load_vlm(tiny_dir)
    used.tokenizer(["a", "a red circle"], padding=True, padding_side="left", truncation=True)
    assert used.tokenizer.backend_tokenizer.padding is not None  # what the call leaves
    settle_tokenizer(used)
    fresh.save_pretrained(tmp_path / "fresh")
    used.save_pretrained(tmp_path / "used")
    files = sorted(f.name for f in (tmp_path / "fresh").iterdir())
    assert "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / "used" / name).read_bytes()


def test_unreadable_checkpoints_fail_clearly(tmp_path: Path, tiny_dir: Path):
    with pytest.raises(CheckpointError, match="safetensors"):
        load_vlm(tmp_path)  # empty folder
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        load_vlm(broken)
    no_proc = tmp_path / "no_proc"
    no_proc.mkdir()
    for f in tiny_dir.iterdir():
        if f.name not in (
            "preprocessor_config.json",
            "processor_config.json",
            "video_preprocessor_config.json",
        ):
            (no_proc / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointError):
        load_vlm(no_proc)
