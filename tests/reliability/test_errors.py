"""Class 9 of issue 18: errors are one clear line, not tracebacks; SIGTERM stops a stage
cleanly; a resumed run's logged curves equal an uninterrupted run's.

- a params file that is not YAML or not text, an out-of-range ``--seed``, a missing input:
  one line, exit 2 (before: tracebacks);
- an MLflow store that cannot be written (not creatable, corrupt, read-only) or that is
  deleted while the stage runs: one line naming the store, exit 2 (before: tracebacks, or,
  for a deleted store, exit 0 with the run silently lost);
- SIGTERM: training stops at the end of its step with a complete checkpoint, the MLflow run
  is marked KILLED, exit 143; the rerun resumes from that checkpoint (before: the process
  died mid-step, its run left RUNNING);
- kill -9 after logging past the last checkpoint, then a rerun: the MLflow metric history
  has one point per step, equal to an uninterrupted run's (before: the steps after the
  checkpoint were logged twice).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from mmrpt import checkpoints
from mmrpt.cli import main
from mmrpt.tracking import resume_file
from tests.reliability.conftest import error_lines

ROOT = Path(__file__).resolve().parents[2]


def _one_line(capsys) -> str:
    (line,) = error_lines(capsys.readouterr().err)
    return line


@pytest.mark.parametrize(
    "content, message",
    [
        (b"warmup: [1, 2\n", "params.yaml: not valid YAML (line 2, column 1)"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "params.yaml: not a text file"),
        (b"- just\n- a list\n", "params.yaml: top level must be a mapping"),
    ],
)
def test_a_broken_params_file_is_one_line(tiny_project: Path, capsys, content, message):
    (tiny_project / "params.yaml").write_bytes(content)
    assert main(["data"]) == 2
    assert _one_line(capsys).startswith(f"mmrpt: {message}")


def test_an_out_of_range_seed_is_one_line(tiny_project: Path, capsys):
    for seed in ("99999999999", "-1", "1001"):
        assert main(["rl", "--arm", "mmrpt", "--seed", seed]) == 2
        assert (
            _one_line(capsys)
            == f"mmrpt: rl: --seed {seed}: must be in 0..1000 (as the seeds param)"
        )


def test_a_missing_input_is_one_line_naming_the_command_that_makes_it(warmed_project, capsys):
    shutil.move("data/world", "world")
    assert main(["warmup"]) == 2
    line = _one_line(capsys)
    assert line.startswith("mmrpt: warmup: stage warmup needs its input data at data/world")
    assert line.endswith("run `python -m mmrpt data` first")
    shutil.move("world", "data/world")
    assert main(["sft", "--arm", "ntp", "--seed", "0"]) == 2
    assert _one_line(capsys).endswith(
        "model at models/rl/ntp-0 (${rl.out_dir}/${item.arm}-${item.seed}), which does not "
        "exist: run `python -m mmrpt rl --arm ntp --seed 0` first"
    )


def test_a_store_that_cannot_be_written_is_one_line_naming_it(warmed_project: Path, capsys):
    uri = "sqlite:///params.yaml/mlflow.db"  # under a file: cannot be created
    assert main(["score_heads", "-S", f"tracking.tracking_uri={uri}"]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"mmrpt: score_heads: MLflow store {uri} cannot be written: ")
    assert not (warmed_project / "data/scores/scores.parquet").exists()
    (warmed_project / "mlruns").mkdir()
    (warmed_project / "mlruns/mlflow.db").write_bytes(b"not a database\n" * 100)
    assert main(["score_heads"]) == 2
    assert "MLflow store sqlite:///mlruns/mlflow.db cannot be written: file is not a database" in (
        _one_line(capsys)
    )


def test_a_read_only_store_is_one_line_naming_it(warmed_project: Path, capsys):
    assert main(["score_heads", "-S", "score.splits=[dev, test_iid]"]) == 0  # the store exists
    db = warmed_project / "mlruns/mlflow.db"
    if os.geteuid() == 0:  # root writes read-only files: make it immutable instead
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: cannot make the store read-only")
    else:
        db.chmod(0o444)
        db.parent.chmod(0o555)
    try:
        assert main(["score_heads", "-S", "score.splits=[dev, test_iid]"]) == 2
        line = _one_line(capsys)  # sqlite: "attempt to write a readonly database" (chmod)
        assert line.startswith(  # or "disk I/O error" (chattr +i: no journal either)
            "mmrpt: score_heads: MLflow store sqlite:///mlruns/mlflow.db cannot be written: "
        )
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        else:
            db.parent.chmod(0o755)
            db.chmod(0o644)


def test_a_store_deleted_while_the_stage_runs_is_reported(
    warmed_project: Path, capsys, monkeypatch
):
    from mmrpt.stages import score

    scores = score.score_records

    def delete_the_store(*args, **kwargs):
        shutil.rmtree(warmed_project / "mlruns", ignore_errors=True)
        return scores(*args, **kwargs)

    assert main(["score_heads"]) == 0
    monkeypatch.setattr(score, "score_records", delete_the_store)
    assert main(["score", "--worker", "0", "-S", "score.splits=[dev, test_iid]"]) == 2
    line = _one_line(capsys)
    assert line.startswith("mmrpt: score: MLflow store sqlite:///mlruns/mlflow.db ")
    assert "deleted" in line and "while the stage ran" in line


def _mmrpt(project: Path, *args: str, code: str | None = None) -> subprocess.Popen:
    head = ["-c", code] if code else ["-m", "mmrpt"]
    return subprocess.Popen(
        [sys.executable, *head, *args],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _runs(project: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns/mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


STEPS = ["-S", "warmup.max_steps=40", "-S", "warmup.save_steps=10"]


def test_sigterm_stops_training_cleanly_and_the_rerun_resumes(warmed_project: Path):
    p = warmed_project
    shutil.rmtree(p / "checkpoints/warmup")
    proc = _mmrpt(p, "warmup", *STEPS)
    ckpt = p / "checkpoints/warmup"
    deadline = time.time() + 120
    while not (ckpt / "checkpoint-10/trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    assert "mmrpt: warmup: stopped by SIGTERM; rerun to resume" in out
    saved = checkpoints.checkpoints(ckpt)
    assert saved and all(checkpoints.problem(c) is None for c in saved)  # all complete
    stopped = int(saved[0].name.split("-")[1])
    assert 10 <= stopped < 40
    (run,) = [r for r in _runs(p) if r.info.run_name == "warmup" and r.info.status == "KILLED"]
    assert resume_file(ckpt).read_text() == run.info.run_id

    rerun = _mmrpt(p, "warmup", *STEPS)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    assert f"resuming from checkpoints/warmup/{saved[0].name}" in out
    assert json.loads((p / "metrics/warmup.json").read_text())["steps"] == 40
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED"


# warmup SIGKILLed by itself right after logging step 15 (its last checkpoint is step 10)
KILL_AFTER_LOGGING_15 = """
import os, signal, sys
from mmrpt.stages import step_logger
on_log = step_logger.StepLogger.on_log
def then_killed(self, args, state, control, logs=None, **kwargs):
    on_log(self, args, state, control, logs=logs, **kwargs)
    if state.global_step == 15:
        os.kill(os.getpid(), signal.SIGKILL)
step_logger.StepLogger.on_log = then_killed
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _history(project: Path, run_id: str, key: str = "train/loss") -> list[tuple[int, float]]:
    _runs(project)
    return sorted((m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, key))


def test_curves_after_a_resume_equal_an_uninterrupted_run(warmed_project: Path):
    p = warmed_project
    out = ["-S", "warmup.checkpoint_dir=ref_ck", "-S", "warmup.out_dir=ref_model"]
    assert main(["warmup", *STEPS, *out]) == 0
    reference = _history(p, resume_file(p / "ref_ck").read_text())
    assert [s for s, _ in reference] == list(range(5, 41, 5))

    proc = _mmrpt(p, "warmup", *STEPS, code=KILL_AFTER_LOGGING_15)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == -9, text[-3000:]
    run_id = resume_file(p / "checkpoints/warmup").read_text()
    assert [s for s, _ in _history(p, run_id)] == [5, 10, 15]  # 15 is past checkpoint-10
    assert main(["warmup", *STEPS]) == 0
    resumed = _history(p, run_id)
    assert [s for s, _ in resumed] == [s for s, _ in reference]  # one point per step
    for (_, got), (_, want) in zip(resumed, reference, strict=True):
        assert got == pytest.approx(want, rel=1e-4)
