import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmrpt.cli import main
from mmrpt.finetune.vqa import llava_rows


def test_sft_trains_the_run_it_names(primed_project: Path, capsys):
    p = primed_project
    assert main(["sft", "--arm", "ntp", "--seed", "0"]) == 2  # its rl stage has not run
    assert "run `python -m mmrpt rl --arm ntp --seed 0` first" in capsys.readouterr().err
    assert main(["rl", "--arm", "masked_sft", "--seed", "0"]) == 0
    assert main(["sft", "--arm", "masked_sft", "--seed", "0"]) == 0
    before = load_file(p / "models/rl/masked_sft-0/model.safetensors")
    after = load_file(p / "models/sft/masked_sft-0/model.safetensors")
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 0
    m = json.loads((p / "metrics/sft/masked_sft-0.json").read_text())
    assert m["steps"] == 4 and m["n_rows"] == 16 and m["final_loss"] > 0
    assert m["samples_per_step"] == 4  # sft.batch_size


def test_llava_rows_count_every_refusal(tmp_path: Path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "ok.png")
    Image.new("RGB", (40, 60), "blue").save(tmp_path / "two.jpg")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    conv = [
        {"from": "human", "value": "<image>\nWhat colour?"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "Sure?"},
        {"from": "gpt", "value": "Yes."},
    ]
    pair = [{"from": "human", "value": "A: <image> B: <image> Same?"}, conv[1]]
    items = [
        {"id": "a", "image": "ok.png", "conversations": conv},
        {"id": "b", "image": "bad.png", "conversations": conv},
        {"id": "c", "image": "missing.png", "conversations": conv},
        {"id": "d", "image": "ok.png", "conversations": [conv[0]]},
        {"id": "e", "conversations": conv},  # text-only: one image marker, no image
        "not a dict",
        {"id": "g", "image": ["ok.png", "two.jpg"], "conversations": pair},
        {"id": "h", "conversations": conv[2:]},  # text-only
        {"id": "i", "image": "ok.png", "conversations": conv[2:]},  # no marker: image first
    ]
    (tmp_path / "sft.json").write_text(json.dumps(items))
    rows, refused = llava_rows(tmp_path / "sft.json")
    assert [json.loads(r["messages"])[0]["content"] for r in rows] == [
        [{"type": "image"}, {"type": "text", "text": "What colour?"}],
        [
            {"type": "text", "text": "A:"},
            {"type": "image"},
            {"type": "text", "text": "B:"},
            {"type": "image"},
            {"type": "text", "text": "Same?"},
        ],
        [{"type": "text", "text": "Sure?"}],
        [{"type": "image"}, {"type": "text", "text": "Sure?"}],
    ]
    first = json.loads(rows[0]["messages"])  # one row per conversation, every turn
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant"]
    assert first[3]["content"] == [{"type": "text", "text": "Yes."}]
    assert [len(r["images"]) for r in rows] == [1, 2, 0, 1]
    assert all(isinstance(p, str) for r in rows for p in r["images"])  # decoded later
    assert refused.n_input == 9 and sum(refused.reasons.values()) == 5
    assert {r["id"]: r["reason"] for r in refused.rows} == {
        "b": "unreadable image: UnidentifiedImageError",
        "c": "missing image file",
        "d": "no answered human turn",
        "e": "1 <image> markers for 0 images",
        "5": "no conversations list",
    }
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ValueError, match="cannot read"):
        llava_rows(tmp_path / "broken.json")


def test_llava_sft_trains_on_every_assistant_turn_with_lazy_images(tmp_path: Path):
    """One batch of the trainer's own collator over a multi-turn, a two-image and a text-only
    conversation: labels exactly on the assistant turns (+ <|im_end|>), images decoded only
    when read, and a few steps train."""
    from mmrpt.finetune.vqa import llava_dataset, make_sft_trainer
    from mmrpt.modeling.loader import load_vlm
    from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
    from tests.real_data import write_llava

    rows, refused = llava_rows(write_llava(tmp_path / "sft", n=3))
    assert len(rows) == 3 and not refused.rows
    data = llava_dataset(rows)
    assert data.with_format(None)[0]["images"] == rows[0]["images"]  # stored as paths
    spec = TinySpec(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        vision_depth=1,
        vision_embed_dim=16,
        vision_heads=2,
        image_size=112,
    )
    texts = [json.loads(r["messages"])[1]["content"][0]["text"] for r in rows] * 20
    model, processor = load_vlm(build_tiny_vlm(texts, spec, tmp_path / "m"))
    trainer = make_sft_trainer(
        model,
        processor,
        data,
        out_dir=tmp_path / "ckpt",
        steps=2,
        batch_size=3,
        lr=1e-3,
        save_steps=10,
        seed=0,
    )
    batch = trainer.data_collator([data[i] for i in range(3)])
    tok = processor.tokenizer
    for b, row in enumerate(rows):
        answers = [m for m in json.loads(row["messages"]) if m["role"] == "assistant"]
        want = "".join(m["content"][0]["text"] + "<|im_end|>\n" for m in answers)
        got = tok.decode(batch["labels"][b][batch["labels"][b] != -100])
        assert got == want, (got, want)
    assert batch["image_grid_thw"].shape[0] == 3  # 1 + 2 + 0 images
    trainer.train()
    assert trainer.state.global_step == 2
