"""Class 7 of issue 18: one bad or huge row is rejected with a reason; the stage goes on.

- a lone surrogate (valid JSON ``"\\ud800"``: not Unicode, cannot be written as UTF-8) in a
  caption, an id or an image path;
- a caption longer than ``data.max_caption_chars`` (a 200,000-character caption made warmup
  try to allocate 12.9 GB);
- in LLaVA SFT data: a decompression-bomb image (over ``sft.max_image_pixels``, refused from
  its header before any pixel is decoded), a lone surrogate, text over ``sft.max_text_chars``.

Before: the surrogate crashed the data stage with no manifest written, the long caption was
accepted, and the bomb crashed the sft stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mmrpt.cli import main
from mmrpt.data.records import read_manifest
from tests.reliability.test_bad_data import png_header_only

OK = "A red square. It is on the left."


def test_surrogates_and_huge_captions_are_rejected_and_the_rest_ingested(tiny_project: Path):
    src = tiny_project / "raw"
    src.mkdir()
    Image.new("RGB", (24, 24), "red").save(src / "red.png")
    lines = [
        json.dumps({"id": "ok", "image": "red.png", "caption": OK}),
        '{"id": "s1", "image": "red.png", "caption": "A red \\ud800 square. It is left."}',
        '{"id": "s2\\udfff", "image": "red.png", "caption": "A red square. It is left."}',
        '{"id": "s3", "image": "red\\ud800.png", "caption": "A red square. It is left."}',
        json.dumps({"id": "huge", "image": "red.png", "caption": "A red square. " * 15_000}),
        json.dumps({"id": "long", "image": "red.png", "caption": OK + " x" * 100}),
        json.dumps({"id": "ok2", "image": "red.png", "caption": OK}),
    ]
    (src / "train.jsonl").write_text("\n".join(lines) + "\n")
    inputs = json.dumps({"train": str(src / "train.jsonl")})
    args = ["-S", "data.source=jsonl", "-S", f"data.inputs={inputs}"]
    assert main(["data", *args, "-S", "data.max_caption_chars=200"]) == 0
    out = tiny_project / "data/world"
    assert [r.id for r in read_manifest(out / "train.jsonl")] == ["ok", "ok2"]
    rejects = {
        r["row"]: r["reason"]
        for r in map(json.loads, (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines())
    }
    assert rejects == {
        2: "caption not Unicode: lone surrogate",
        3: "id not Unicode: lone surrogate",
        4: "image path not Unicode: lone surrogate",
        5: "caption too long: 209999 characters > 200",
        6: "caption too long: 232 characters > 200",
    }
    metrics = json.loads((tiny_project / "metrics/data.json").read_text())
    assert metrics["train/n_input"] == 7 and metrics["train/n_accepted"] == 2
    # the default limit: 4,000 characters
    assert main(["data", *args]) == 0
    assert [r.id for r in read_manifest(out / "train.jsonl")] == ["ok", "long", "ok2"]


def test_llava_rows_refuse_bombs_surrogates_and_huge_text(tmp_path: Path):
    from mmrpt.finetune.vqa import llava_rows

    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    (tmp_path / "bomb.png").write_bytes(png_header_only(60_000, 60_000))

    def item(rid: str, image: str = "red.png", question: str = "Colour?") -> dict:
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": "Red."}]
        return {"id": rid, "image": image, "conversations": turns}

    items = [
        item("ok"),
        item("bomb", image="bomb.png"),
        item("huge", question="Why? " * 50_000),
        item("s1", question="Colour \ud800?"),
        item("s2", image="red\udfff.png"),
        item("id\ud800"),
    ]
    text = json.dumps(items)  # \ud800 escapes: valid JSON
    (tmp_path / "sft.json").write_text(text, encoding="ascii")
    rows, refused = llava_rows(tmp_path / "sft.json", max_text_chars=1000, max_pixels=4096**2)
    assert len(rows) == 2  # ok and the id with a surrogate (only its id is odd)
    assert refused.rows == [
        {"id": "bomb", "reason": "unreadable image: image too large"},
        {"id": "huge", "reason": "text too long: 250004 characters > 1000"},
        {"id": "s1", "reason": "text not Unicode: lone surrogate"},
        {"id": "s2", "reason": "image path not Unicode: lone surrogate"},
    ]
    json.dumps(refused.rows, ensure_ascii=False).encode("utf-8")  # writable as rejects.jsonl


def test_an_input_file_whose_name_is_not_utf8_is_refused(tiny_project: Path, capsys):
    """Every record names its input file and the manifest is UTF-8: such a file name used to
    crash the stage when the first record was written."""
    src = tiny_project / "raw"
    src.mkdir()
    name = b"caps\xff.jsonl".decode("utf-8", "surrogateescape")
    (src / name).write_text(json.dumps({"id": "a", "image": "x.png", "caption": OK}) + "\n")
    inputs = json.dumps({"train": str(src / "*.jsonl")})
    assert main(["data", "-S", "data.source=jsonl", "-S", f"data.inputs={inputs}"]) == 2
    assert "input file name not UTF-8: " in capsys.readouterr().err
