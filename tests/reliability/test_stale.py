"""Class 8 of issue 18: an output folder holds exactly what the current params produced, and
an empty params file is an error, not "all defaults".

Before: switching a synthetic dataset folder to ``source: jsonl`` with only a train split
kept the synthetic dev/test splits (and reported them in metrics/data.json); an empty
params.yaml silently used the defaults and regenerated the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmrpt.cli import main
from tests.reliability.conftest import error_lines


def test_switching_the_data_source_leaves_no_old_split(tiny_project: Path):
    assert main(["data"]) == 0
    out = tiny_project / "data/world"
    assert (out / "dev.jsonl").exists() and (out / "probes/test_iid.jsonl").exists()
    src = tiny_project / "raw"
    src.mkdir()
    Image.new("RGB", (24, 24), "red").save(src / "red.png")
    row = {"id": "r", "image": "red.png", "caption": "A red square. It is on the left."}
    (src / "train.jsonl").write_text(json.dumps(row) + "\n")
    inputs = json.dumps({"train": str(src / "train.jsonl")})
    assert main(["data", "-S", "data.source=jsonl", "-S", f"data.inputs={inputs}"]) == 0
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert files == [".mmrpt-owner", "images/r.png", "rejects.jsonl", "train.jsonl"]
    metrics = json.loads((tiny_project / "metrics/data.json").read_text())
    assert {k.split("/")[0] for k in metrics} == {"train"}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_params_file_is_an_error_naming_it(tiny_project: Path, capsys, text):
    (tiny_project / "params.yaml").write_text(text)
    assert main(["data"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("mmrpt: params.yaml: empty params file")
    assert [f.name for f in tiny_project.iterdir()] == ["params.yaml"]  # nothing generated
