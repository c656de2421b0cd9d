import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from mmrpt.cli import main
from mmrpt.config import load_params
from mmrpt.data.records import read_manifest
from mmrpt.modeling.loader import load_vlm
from mmrpt.tracking import resume_file
from tests.killing import killed_after_save


def test_data_then_warmup_loss_falls(tiny_project: Path):
    assert main(["data"]) == 0
    data = json.loads((tiny_project / "metrics/data.json").read_text())
    assert data["train/n_records"] == 64 and data["test_counter/n_records"] == 16
    assert len(read_manifest(tiny_project / "data/world/train.jsonl")) == 64

    assert main(["warmup"]) == 0
    metrics = json.loads((tiny_project / "metrics/warmup.json").read_text())
    assert metrics["steps"] == 40
    for key in ("loss_true_image", "loss_shuffled_image", "image_gain"):
        assert key in metrics
    # per-step losses reached MLflow, and they fell
    assert load_params("params.yaml").tracking.tracking_uri.startswith("sqlite:///mlruns")
    # absolute URI: MLflow caches stores by URI string (see tracking.configure)
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlruns/mlflow.db'}")
    run_id = resume_file(Path("checkpoints/warmup")).read_text()
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(losses) == 8
    assert losses[-1] < 0.8 * losses[0]
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "warmup" and run.data.params["warmup.max_steps"] == "40"
    model, _ = load_vlm(tiny_project / "models/warmup")  # the final model loads
    assert sum(p.numel() for p in model.parameters()) > 0


def _run(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-m", "mmrpt", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(tiny_project: Path, tmp_path_factory):
    assert main(["data"]) == 0
    # uninterrupted reference, in its own checkpoint dir
    ref = ["-S", "warmup.checkpoint_dir=ref_ckpt", "-S", "warmup.out_dir=ref_model"]
    assert _run(["warmup", *ref], tiny_project).wait() == 0
    reference = json.loads((tiny_project / "metrics/warmup.json").read_text())

    killed_after_save(["warmup"], tiny_project, step=20)
    ckpt = tiny_project / "checkpoints/warmup"
    assert (
        not (tiny_project / "metrics/warmup.json").exists()
        or json.loads((tiny_project / "metrics/warmup.json").read_text()) == reference
    )
    run_id = resume_file(ckpt).read_text()

    resumed = _run(["warmup"], tiny_project)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming from" in out
    assert resume_file(ckpt).read_text() == run_id  # same MLflow run continued
    metrics = json.loads((tiny_project / "metrics/warmup.json").read_text())
    assert metrics["steps"] == 40
    assert metrics["final_train_loss"] == pytest.approx(reference["final_train_loss"], rel=1e-3)
    assert metrics["loss_true_image"] == pytest.approx(reference["loss_true_image"], rel=1e-3)
