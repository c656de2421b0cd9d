import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmrpt.cli import main
from mmrpt.finetune.vqa import llava_rows
from mmrpt.modeling.loader import CheckpointError


def test_sft_trains_the_run_it_names(primed_project: Path):
    p = primed_project
    with pytest.raises(CheckpointError, match="rl output"):
        main(["sft", "--arm", "ntp", "--seed", "0"])  # its rl stage has not run
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
    (tmp_path / "bad.png").write_bytes(b"not a png")
    conv = [
        {"from": "human", "value": "<image>\nWhat colour?"},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "Sure?"},
        {"from": "gpt", "value": "Yes."},
    ]
    items = [
        {"id": "a", "image": "ok.png", "conversations": conv},
        {"id": "b", "image": "bad.png", "conversations": conv},
        {"id": "c", "image": "missing.png", "conversations": conv},
        {"id": "d", "image": "ok.png", "conversations": [conv[0]]},
        {"id": "e", "conversations": conv},
        "not a dict",
    ]
    (tmp_path / "sft.json").write_text(json.dumps(items))
    rows, refused = llava_rows(tmp_path / "sft.json")
    assert len(rows) == 2  # one row per answered turn of the good conversation
    assert rows[1]["prompt"][-1]["content"][-1]["text"] == "Sure?"
    assert rows[1]["completion"][0]["content"][0]["text"] == "Yes."
    assert rows[0]["prompt"][0]["content"][0] == {"type": "image"}
    assert refused.n_input == 6 and sum(refused.reasons.values()) == 5
    assert {r["id"] for r in refused.rows} == {"b", "c", "d", "e", "5"}
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(ValueError, match="cannot read"):
        llava_rows(tmp_path / "broken.json")
