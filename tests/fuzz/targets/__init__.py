"""One module per fuzz target, each with `TestOneInput(data: bytes)`.

A target raises only for a crash: the documented error answers (FramingError, TextError,
NegotiationError, CommandError, ConfigError, CHECK CONDITION results) are caught inside it.
Targets import nothing from atheris, so regression tests can feed them inputs directly.
"""

from __future__ import annotations

NAMES = ("pdu", "login", "cdb", "ctl", "config")
