"""Progress that reads well both on a terminal and in a log file.

On a terminal: tqdm bars as usual. Elsewhere (a DVC stage's output, a Prefect worker, CI), a
bar that redraws with carriage returns becomes walls of noise in a log, so there: our own bars
go through tqdm's own formatting and rate limiting to periodic log lines (one every
``LOG_EVERY_S`` seconds, plus the first and the last), and third-party bars (datasets, lm-eval,
transformers) are switched off through tqdm's TQDM_DISABLE default (``quiet_third_party``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

log = logging.getLogger("mmrpt.progress")
LOG_EVERY_S = 30.0


def interactive() -> bool:
    return sys.stderr.isatty()


class _LogLines:
    """A file for tqdm that turns each redraw into one log line."""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            log.info(text)

    def flush(self) -> None:
        pass


def bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    enabled: bool = True,
):
    """tqdm over ``iterable``: a bar on a terminal, periodic log lines otherwise."""
    from tqdm.auto import tqdm  # imported late: quiet_third_party must set its env first

    if not enabled:
        return tqdm(iterable, disable=True)
    if interactive():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=False)
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        file=_LogLines(),
        ascii=True,
        mininterval=LOG_EVERY_S,
        maxinterval=LOG_EVERY_S,
        ncols=100,
        disable=False,
    )


def quiet_third_party() -> None:
    """Off a terminal, switch off the progress bars of the libraries we call (tqdm reads its
    TQDM_* defaults when it is imported, so this runs first thing in ``python -m mmrpt``; HF
    datasets and transformers have their own switches)."""
    if interactive():
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
