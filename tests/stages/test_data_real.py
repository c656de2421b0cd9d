import json
from pathlib import Path

from PIL import Image

from mmrpt.cli import main
from mmrpt.data.records import read_manifest


def test_data_stage_ingests_real_jsonl_through_the_cli(tiny_project: Path):
    src = tiny_project / "raw"
    src.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (40, 30), (i * 60, 10, 10)).save(src / f"{i}.jpg")
        rows.append(
            {
                "id": f"img{i}",
                "image": f"{i}.jpg",
                "caption": f"A dark red photo number {i}. It has no objects.",
            }
        )
    rows.append({"id": "bad", "image": "missing.jpg", "caption": "Two. Sentences."})
    rows.append({"id": "short", "image": "0.jpg", "caption": "Only one sentence."})
    (src / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert (
        main(
            [
                "data",
                "-S",
                "data.source=jsonl",
                "-S",
                f"data.inputs={{train: {src / 'train.jsonl'}}}",
            ]
        )
        == 0
    )
    records = read_manifest(tiny_project / "data/world/train.jsonl")
    assert [r.id for r in records] == ["img0", "img1", "img2", "img3"]
    assert all(s.label is None for r in records for s in r.sentences)
    metrics = json.loads((tiny_project / "metrics/data.json").read_text())
    assert metrics["train/n_input"] == 6 and metrics["train/n_rejected"] == 2
    rejects = (tiny_project / "data/world/rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 2


def test_bad_params_fail_before_work(tiny_project: Path, capsys):
    assert main(["data", "-S", "data.n_trian=5"]) == 2
    assert "data.n_trian" in capsys.readouterr().err
    assert not (tiny_project / "data").exists()


def test_missing_real_inputs_and_splits_fail_before_work_naming_the_param(
    tiny_project: Path, capsys
):
    args = ["data", "-S", "data.source=jsonl", "-S", "data.inputs={train: nope/*.jsonl}"]
    assert main(args) == 2
    assert "data.inputs.train: no input file(s) for 'nope/*.jsonl'" in capsys.readouterr().err
    assert not (tiny_project / "data/world/train.jsonl").exists()
    assert main(["data"]) == 0  # the world: train, dev, test_iid, test_counter
    assert main(["warmup", "-S", "warmup.eval_split=val"]) == 2
    assert "warmup.eval_split: split(s) ['val'] not in the data" in capsys.readouterr().err
    assert main(["score_heads", "-S", "score.splits=[train, test]"]) == 2
    assert "score.splits" in capsys.readouterr().err
    assert main(["score", "--worker", "0", "-S", "score.splits=[train, test]"]) == 2
    assert "score.splits" in capsys.readouterr().err
    assert not (tiny_project / "checkpoints").exists() and not (tiny_project / "models").exists()
