"""Class 1 of issue 18: nothing in an output or checkpoint folder is unpickled unless this
workspace wrote it (a checkpoint folder can come from a DVC remote or a shared disk).

Each case puts a pickle that creates a file when loaded (tests/reliability/payload.py) where a
loader looks, and asserts the file is never created:
- VLMEvalKit's resume pickles in an eval output folder (it used to load them: the payload
  ran and the stage exited 0);
- DeepSpeed's model states in an rl checkpoint (``torch.load(weights_only=False)``; slow:
  the rl stage through DeepSpeed on CPU);
- a checkpoint this workspace did not write, or that changed after it was written, is never
  loaded at all: the resume falls back to the last one that matches its record.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import socket
from pathlib import Path

import pytest

from mmrpt import checkpoints
from mmrpt.cli import main
from tests.reliability.payload import payload

ROOT = Path(__file__).resolve().parents[2]


def test_the_payload_runs_when_unpickled(tmp_path: Path):
    pickle.loads(payload(tmp_path / "pwned")).close()
    assert (tmp_path / "pwned").exists()


def test_vlmevalkit_never_loads_pickles_left_in_its_output_folder(tiny_project: Path):
    from mmrpt.evaluation.reference import ConstantAnswerer
    from mmrpt.evaluation.vlmevalkit import run_vlmevalkit

    assert main(["data"]) == 0
    out = tiny_project / "eval/mmrpt-0/zero_shot/vlmevalkit"
    out.mkdir(parents=True)
    target = tiny_project / "pwned"
    name = "mmrpt_probes_iid"
    for planted in (  # every pickle VLMEvalKit reads back from its work folder
        f"mmrpt_{name}_PREV.pkl",
        f"01_{name}.pkl",
        f"mmrpt_{name}_exact_matching_result.pkl",
    ):
        (out / planted).write_bytes(payload(target))
    acc = run_vlmevalkit(
        None, "data/world", ["test_iid"], out, limit=2, answerer=ConstantAnswerer()
    )
    assert not target.exists()
    assert 0.0 <= acc["vlmeval/iid/acc"] <= 1.0
    assert (out / f"mmrpt_{name}.xlsx").exists()  # the results still land in the folder
    assert not [f for f in out.iterdir() if f.suffix == ".pkl" and f.stat().st_size > 200]


def _checkpoint(project: Path, step: int) -> Path:
    return project / "checkpoints/warmup" / f"checkpoint-{step}"


def test_a_checkpoint_not_written_here_is_never_loaded(warmed_project: Path, caplog):
    """A newer checkpoint-20 arrives (as from a DVC remote) holding other weights and a
    pickle payload: the rerun does not load it, removes it, and resumes from checkpoint-10
    (its record matches), so the final model is this workspace's own. Before: it was the
    resume point and its weights became the final model."""
    caplog.set_level(logging.INFO)
    p = warmed_project
    own = (p / "models/warmup/model.safetensors").read_bytes()
    foreign = _checkpoint(p, 20)
    shutil.copytree(_checkpoint(p, 10), foreign)
    state = json.loads((foreign / "trainer_state.json").read_text())
    (foreign / "trainer_state.json").write_text(json.dumps(state | {"global_step": 20}))
    init = p / "checkpoints/warmup/init/model.safetensors"  # other weights: the untrained ones
    shutil.copy(init, foreign / "model.safetensors")
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt"):
        (foreign / name).write_bytes(payload(p / "pwned"))
    assert checkpoints.problem(_checkpoint(p, 10)) is None
    assert "no record" in checkpoints.problem(foreign)

    assert main(["warmup"]) == 0
    assert not (p / "pwned").exists()
    assert not foreign.exists()
    assert "checkpoint-20: not loaded (no record" in caplog.text
    assert (p / "models/warmup/model.safetensors").read_bytes() == own


def test_a_checkpoint_changed_after_it_was_written_is_never_loaded(warmed_project: Path):
    p = warmed_project
    ckpt = _checkpoint(p, 10)
    (ckpt / "optimizer.pt").write_bytes(payload(p / "pwned"))
    assert checkpoints.problem(ckpt) == "optimizer.pt changed after it was written"
    (ckpt / "extra.pkl").write_bytes(payload(p / "pwned"))
    (ckpt / "optimizer.pt").unlink()
    assert checkpoints.problem(ckpt) == "extra.pkl was not written by this workspace"
    assert checkpoints.resume_point(p / "checkpoints/warmup") is None  # starts over
    assert not ckpt.exists() and not (p / "pwned").exists()


@pytest.mark.slow
def test_deepspeed_resume_never_unpickles_a_changed_checkpoint(primed_project: Path):
    """rl through DeepSpeed ZeRO-2 (one CPU process) saves checkpoint-2 and -4; the model
    states of checkpoint-4 are replaced by the payload. DeepSpeed loads them with
    torch.load(weights_only=False): before, the rerun ran the payload; now checkpoint-4
    fails its record and is removed, and the run resumes from checkpoint-2."""
    import os
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1"),
        "MASTER_PORT": port,
    }
    cfg = ROOT / "mmrpt/deepspeed/zero2.json"
    args = ["rl", "--arm", "mmrpt", "--seed", "0", "-S", f"launch.deepspeed={cfg}"]

    def rl() -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "mmrpt", *args],
            cwd=primed_project,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    rl()
    ckpt = primed_project / "checkpoints/rl/mmrpt-0"
    states = ckpt / "checkpoint-4/global_step4/mp_rank_00_model_states.pt"
    assert states.exists() and checkpoints.problem(ckpt / "checkpoint-4") is None
    target = primed_project / "pwned"
    states.write_bytes(payload(target))
    log = rl()
    assert not target.exists()
    assert "checkpoint-4: not loaded (global_step4/mp_rank_00_model_states.pt changed" in log
    assert "resuming from" in log and "checkpoint-2" in log
    assert checkpoints.problem(ckpt / "checkpoint-4") is None  # saved again, recorded
