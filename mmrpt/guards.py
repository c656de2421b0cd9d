"""Guards every training run gets (mmrpt.training.train_resumable adds them to any Trainer,
TRL's GRPO and SFT trainers included): stop on divergence, stop cleanly on SIGTERM.

- ``StopsOnNonFinite``: a non-finite logged loss or gradient norm, or non-finite weights
  before a checkpoint is saved and at the end, stops training with ``Diverged`` (a clear
  one-line error, exit 2): a NaN model is never saved as a checkpoint or a stage output.
  Weights are checked only when a checkpoint is due (one pass over the parameters).
- SIGTERM (mmrpt.signals): ``StopsOnSignal`` ends training at the end of the current step
  with a checkpoint save when a SIGTERM arrived inside ``signals.deferred_signals``; then
  ``signals.raise_if_terminated`` raises ``Terminated``. The MLflow run is marked KILLED
  (mmrpt.tracking.stage_run).
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

from mmrpt import signals
from mmrpt.modeling.loader import nonfinite_parameters
from mmrpt.safety import Refused

log = logging.getLogger(__name__)


class Diverged(Refused):
    """Training produced a non-finite loss or weights."""


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


class StopsOnSignal(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if signals.pending():
            control.should_save = True
            control.should_training_stop = True
