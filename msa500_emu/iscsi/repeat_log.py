"""Rate-limited warnings: a flood of the same trouble is one line plus a count, not a log storm."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("msa500_emu.iscsi")

# A repeated warning (the same reject again and again) is logged once, then summed up at
# most this often and when the connection closes.
REPEAT_SUMMARY_S = 5.0


class RepeatLog:
    """Log the first occurrence of each kind of trouble, then "N more like this" now and then."""

    def __init__(self, now: Callable[[], float], interval: float = REPEAT_SUMMARY_S) -> None:
        self._now = now
        self.interval = interval
        self.where = ""  # who the connection talks to, for the summaries
        # key -> [repeats not yet reported, time of the last line, latest message]
        self._seen: dict[object, list] = {}

    def warning(self, key: object, msg: str, *args: object) -> None:
        entry = self._seen.get(key)
        now = self._now()
        if entry is None:
            self._seen[key] = [0, now, ""]
            log.warning(msg, *args)
            return
        entry[0] += 1
        entry[2] = msg % args if args else msg
        if now - entry[1] >= self.interval:
            self._summary(entry, now)

    def _summary(self, entry: list, now: float) -> None:
        log.warning("%d more like this%s in the last %.0f s; latest: %s",
                    entry[0], self.where, now - entry[1], entry[2])
        entry[0] = 0
        entry[1] = now

    def flush(self) -> None:
        """Sum up what is still untold (the connection closes, or a quiet moment)."""
        now = self._now()
        for entry in self._seen.values():
            if entry[0]:
                self._summary(entry, now)
