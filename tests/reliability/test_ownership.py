"""Class 2 of issue 18: a param can no longer delete a folder. Nothing is emptied or replaced
unless the project created it (mmrpt.safety: a marker file), and no output may be, hold or sit
inside another output, the project folder, its source or its records (checked when params
load, before any work).

Before: ``-S warmup.checkpoint_dir=.`` emptied the working folder (git repo included),
``-S primer.checkpoint_dir=models`` deleted models/warmup, ``-S warmup.out_dir=data``
replaced the dataset with model files; each exited 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrpt.cli import main
from mmrpt.io import fingerprint_dir
from mmrpt.safety import MARKER, NotOwned, claim, empty_owned, remove_owned


def _files(root: Path) -> set[str]:
    return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()}


@pytest.mark.parametrize(
    "stage, override, message",
    [
        (["warmup"], "warmup.checkpoint_dir=.", "warmup.checkpoint_dir=. is or holds the project"),
        (["primer"], "primer.checkpoint_dir=models", "primer.checkpoint_dir=models overlap"),
        (["warmup"], "warmup.out_dir=data", "warmup.out_dir=data overlap"),
        (["warmup"], "warmup.out_dir=data/world", "warmup.out_dir=data/world overlap"),
        (["sft", "--arm", "mmrpt", "--seed", "0"], "sft.checkpoint_dir=..", "holds the project"),
        (["report"], "report.out_dir=metrics", "report.out_dir=metrics overlaps metrics"),
        (["eval", "--arm", "mmrpt", "--seed", "0"], "eval.out_dir=mmrpt", "overlaps mmrpt"),
        (["data"], "data.out_dir=mlruns/artifacts", "overlaps tracking.artifact_root"),
    ],
)
def test_an_output_param_that_would_delete_other_files_is_refused(
    warmed_project: Path, capsys, stage, override, message
):
    before = _files(warmed_project)
    assert main([*stage, "-S", override]) == 2
    assert message in capsys.readouterr().err
    assert _files(warmed_project) == before  # nothing written, nothing removed


def test_a_folder_the_project_did_not_make_is_never_emptied(warmed_project: Path, capsys):
    mine = warmed_project / "my_results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["warmup", "-S", "warmup.checkpoint_dir=my_results"]) == 2
    err = capsys.readouterr().err
    assert "warmup.checkpoint_dir=my_results: the folder exists, is not empty" in err
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert main(["warmup", "-S", "warmup.out_dir=my_results"]) == 2
    assert (mine / "thesis.tex").read_text() == "years of work"
    empty = warmed_project / "empty"
    empty.mkdir()  # an empty folder is taken (and marked)
    assert main(["warmup", "-S", "warmup.out_dir=empty"]) == 0
    assert (empty / MARKER).read_text() == "warmup.out_dir\n"
    assert (empty / "model.safetensors").exists()


def test_removal_needs_the_marker(tmp_path: Path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for remove in (remove_owned, empty_owned):
        with pytest.raises(NotOwned, match="not created by mmrpt"):
            remove(user)
    with pytest.raises(NotOwned):
        fingerprint_dir(user, "abc")  # a resumable folder with another (no) fingerprint
    with pytest.raises(NotOwned, match="out=.*not empty"):
        claim(user, "out")
    assert (user / "notes.txt").read_text() == "mine"

    ours = claim(tmp_path / "ours", "x.out_dir")
    (ours / "sub").mkdir()
    (ours / "sub/file").write_text("1")
    fingerprint_dir(ours / "sub", "f1")  # inside a marked folder: the project's
    assert not (ours / "sub/file").exists() and (ours / "sub/fingerprint.txt").exists()
    empty_owned(ours)
    assert [f.name for f in ours.iterdir()] == [MARKER]  # still the project's
    remove_owned(ours)
    assert not ours.exists()


def test_a_model_folder_is_replaced_only_if_the_project_made_it(tmp_path: Path):
    from mmrpt.modeling.loader import load_vlm
    from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
    from mmrpt.training import save_model_atomic

    spec = TinySpec(
        vocab_size=300,
        hidden_size=16,
        intermediate_size=16,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        vision_depth=1,
        vision_embed_dim=8,
        vision_heads=2,
        image_size=56,
    )
    src = build_tiny_vlm(["a red circle. a blue square."] * 20, spec, tmp_path / "src")
    model, processor = load_vlm(src)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(NotOwned):
        save_model_atomic(model, processor, user)
    assert (user / "notes.txt").read_text() == "mine"
    out = save_model_atomic(model, processor, tmp_path / "new")  # a new folder: made, marked
    save_model_atomic(model, processor, out)  # and replaced next time
    assert (out / "model.safetensors").exists() and (out / MARKER).exists()


def test_an_output_recorded_in_dvc_lock_is_adopted(tmp_path: Path, monkeypatch):
    """Folders written before markers existed: DVC records them as outputs (and deletes and
    rewrites them itself), so a stage may take them over; a folder DVC does not know stays
    refused."""
    monkeypatch.chdir(tmp_path)
    for folder in ("checkpoints/warmup", "checkpoints/other"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "fingerprint.txt").write_text("0123")
    lock = {"stages": {"warmup": {"outs": [{"path": "checkpoints/warmup", "md5": "x.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(json.dumps(lock))  # JSON is YAML
    claim("checkpoints/warmup", "warmup.checkpoint_dir")
    assert (tmp_path / "checkpoints/warmup" / MARKER).exists()
    with pytest.raises(NotOwned):
        claim("checkpoints/other", "warmup.checkpoint_dir")
    with pytest.raises(NotOwned, match="is a file"):
        claim("dvc.lock", "report.out_dir")
