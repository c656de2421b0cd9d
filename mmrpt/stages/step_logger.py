"""The Trainer callback that sends training logs to MLflow (through mmrpt.tracking) and prints
progress lines off a terminal. Its own module, imported by the stages that train only: it
subclasses transformers' TrainerCallback, and importing transformers (with torch and peft)
costs ~10 s of start-up that the data, mask, score_merge and report stages do not need."""

from __future__ import annotations

import logging
import sys
import time

from transformers import TrainerCallback

from mmrpt import tracking

log = logging.getLogger(__name__)


class StepLogger(TrainerCallback):
    """Sends the Trainer's logs (loss, lr, grad norm, ...) to the active MLflow run per step,
    and completion tables from trainers that share them (mmrpt.rl.grpo) to ``completions.json``.
    Off a terminal (where the Trainer's bar is off) each log is also one progress line: step,
    loss or reward, elapsed and expected time left.

    A resumed stage continues its MLflow run, which already holds the steps its killed
    process logged, some past the checkpoint it resumes from: a metric is not logged again
    at a step it already has (the resumed run recomputes the same values), so the history
    equals an uninterrupted run's, one point per step."""

    SHOWN = ("loss", "reward", "grad_norm", "learning_rate")

    def __init__(self, prefix: str = "train/"):
        self.prefix = prefix
        self.start: tuple[float, int] | None = None
        self._logged: dict[str, int] = {}  # metric -> the last step the run already has

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = (time.perf_counter(), state.global_step)
        run_id = tracking.active_run_id()
        if run_id is not None and state.is_world_process_zero:
            self._logged = tracking.logged_steps(run_id, self.prefix)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        step = state.global_step
        fresh = {
            self.prefix + k: v
            for k, v in logs.items()
            if self._logged.get(tracking.metric_name(self.prefix + k), -1) < step
        }
        tracking.log_metrics(fresh, step=step)
        if self.start is not None and not sys.stderr.isatty():
            t0, step0 = self.start
            elapsed, done = time.perf_counter() - t0, state.global_step - step0
            left = elapsed / done * (state.max_steps - state.global_step) if done > 0 else 0
            shown = ", ".join(f"{k} {logs[k]:.4g}" for k in self.SHOWN if k in logs)
            if not shown:  # the end-of-training summary, not a step
                return
            log.info(
                "step %d/%d: %s (%.0f s elapsed, ~%.0f s left)",
                state.global_step,
                state.max_steps,
                shown,
                elapsed,
                left,
            )

    def on_completions(self, args, state, control, table=None, **kwargs):
        if table and state.is_world_process_zero:
            tracking.log_completions(table)
