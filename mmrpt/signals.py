"""SIGTERM handling for every stage process (installed by the CLI): outside training a SIGTERM
raises ``Terminated`` at once (every output is written atomically, so nothing half-written is
left); inside ``deferred_signals`` (training) it is only recorded, mmrpt.guards.StopsOnSignal
ends training at the end of the step with a checkpoint, and ``raise_if_terminated`` raises
``Terminated`` after it. Apart from mmrpt.guards (whose callbacks need transformers) so that
stages that train nothing do not import transformers and torch to install it."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger(__name__)


class Terminated(SystemExit):
    """The process got SIGTERM; exits with 128 + 15 unless caught."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


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


def pending() -> bool:
    """A SIGTERM arrived inside ``deferred_signals`` and has not been raised yet."""
    return _state["pending"] is not None


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
