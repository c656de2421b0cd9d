"""Guards every training run gets (mmrpt.training.train_resumable adds them to any Trainer,
TRL's GRPO and SFT trainers included): stop on divergence, stop cleanly on SIGTERM.

- ``StopsOnNonFinite``: a non-finite logged loss or gradient norm, or non-finite weights
  before a checkpoint is saved and at the end, stops training with ``Diverged`` (a clear
  one-line error, exit 2): a NaN model is never saved as a checkpoint or a stage output.
  Weights are checked only when a checkpoint is due (one pass over the parameters).
- SIGTERM: the CLI installs ``on_sigterm``. Outside training it raises ``Terminated`` at
  once (every output is written atomically, so nothing half-written is left); inside
  ``deferred_signals`` (training) it only records the signal, and ``StopsOnSignal`` ends
  training at the end of the current step with a checkpoint save; then ``raise_if_terminated``
  raises ``Terminated``. The MLflow run is marked KILLED (mmrpt.tracking.stage_run).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from collections.abc import Iterator

from transformers import TrainerCallback

from mmrpt.modeling.loader import nonfinite_parameters
from mmrpt.safety import Refused

log = logging.getLogger(__name__)


class Diverged(Refused):
    """Training produced a non-finite loss or weights."""


class Terminated(SystemExit):
    """The process got SIGTERM; exits with 128 + 15 unless caught."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


class StopsOnNonFinite(TrainerCallback):
    KEYS = ("loss", "grad_norm")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.KEYS:
            value = (logs or {}).get(key)
            if isinstance(value, int | float) and not math.isfinite(value):
                raise Diverged(
                    f"training diverged at step {state.global_step}: {key} = {value}; nothing "
                    "was saved after the last checkpoint (lower the learning rate?)"
                )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        due = control.should_save or state.global_step >= state.max_steps
        if due and model is not None:
            bad = nonfinite_parameters(model)
            if bad:
                raise Diverged(
                    f"training diverged at step {state.global_step}: non-finite weights in "
                    f"{len(bad)} tensors (e.g. {bad[0]}); not saved (lower the learning rate?)"
                )


_state = {"defer": 0, "pending": None}


def on_sigterm(signum, frame) -> None:
    if _state["defer"]:
        if _state["pending"] is None:
            log.warning("SIGTERM: stopping after this training step, with a checkpoint")
        _state["pending"] = signum
        return
    raise Terminated(signum)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGTERM only stops training at the end of a step while this is open."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1


def raise_if_terminated() -> None:
    signum, _state["pending"] = _state["pending"], None
    if signum is not None:
        raise Terminated(signum)


@contextlib.contextmanager
def sigterm_handler() -> Iterator[None]:
    """Install ``on_sigterm`` (main thread only; elsewhere nothing changes)."""
    try:
        old = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        _state["pending"] = None


class StopsOnSignal(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if _state["pending"] is not None:
            control.should_save = True
            control.should_training_stop = True
