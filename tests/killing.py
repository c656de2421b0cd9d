"""A stage run that SIGKILLs itself right after a chosen checkpoint is saved (and every
callback saw the save), so a kill-and-resume test knows where the kill landed. Polling for the
checkpoint and killing from outside raced a fast stage: it could finish first (CI, 12-02)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# `python -c KILLED_AFTER_SAVE <stage args>` with KILL_AFTER_SAVE=<global step>
KILLED_AFTER_SAVE = """
import os, signal, sys
from transformers.trainer_callback import CallbackHandler
on_save = CallbackHandler.on_save
def then_killed(self, args, state, control, **kwargs):
    control = on_save(self, args, state, control, **kwargs)
    if state.global_step == int(os.environ["KILL_AFTER_SAVE"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return control
CallbackHandler.on_save = then_killed
from mmrpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def killed(code: str, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    """`python -c code *args` in ``cwd`` with ``env`` added; assert it died of SIGKILL."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def killed_after_save(args: list[str], cwd: Path, step: int) -> subprocess.CompletedProcess:
    """Run the stage until it has saved checkpoint-``step``; assert it died there."""
    return killed(KILLED_AFTER_SAVE, args, cwd, KILL_AFTER_SAVE=str(step))
