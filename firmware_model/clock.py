"""Injected time: the process passes a real clock, tests a virtual one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic time line."""
        ...


class MonotonicClock:
    """Wall time for the running emulator."""

    def now(self) -> float:
        return time.monotonic()


class VirtualClock:
    """A clock tests move by hand: an hour of timers runs in a millisecond."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._t += seconds
