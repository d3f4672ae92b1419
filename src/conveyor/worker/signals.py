"""Signal handling for the worker: the handlers only set flags.

The first SIGTERM or SIGINT asks for a warm stop (finish the running job,
take no other); a second SIGINT asks for a cold stop (stop the running job
now and put it back on the queue). A supervisor of several workers takes a
second SIGTERM as a cold stop too (see ``conveyor.worker.supervisor``).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any


@dataclass
class StopFlags:
    warm: bool = False
    cold: bool = False
    reason: str = ""
    #: When the warm stop was asked for (``time.monotonic()``).
    warm_at: float = 0.0
    #: Whether the first request was for a fresh worker in this one's place
    #: (``queue restart``, ``--memory``) rather than for no worker at all.
    renew: bool = False

    def ask_warm(self, reason: str, *, renew: bool = False) -> None:
        """Stop after the running job (the first request's reason stays)."""
        if not self.warm:
            self.warm = True
            self.warm_at = time.monotonic()
            self.reason = reason
            self.renew = renew


class SignalHandlers:
    """Installs the handlers for the lifetime of a ``with`` block."""

    def __init__(
        self,
        flags: StopFlags,
        *,
        cold_signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
    ) -> None:
        self.flags = flags
        #: Which signals, coming after a first, ask for a cold stop.
        self.cold_signals = cold_signals
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlags:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self.flags

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.flags.warm and signum in self.cold_signals:
            self.flags.cold = True
            self.flags.reason = f"second {name}"
        else:
            self.flags.ask_warm(name)
