"""Turns a logged 'internal error' (the protocol layer's catch-all) into an exception with its traceback."""

from __future__ import annotations

import logging
import traceback


class Captured(logging.Handler):
    """Keeps the traceback of the last record logged with exc_info; logs nothing else anywhere."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = "".join(traceback.format_exception(*record.exc_info))


def capture(logger: str) -> Captured:
    handler = Captured()
    log = logging.getLogger(logger)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.ERROR)
    return handler
