"""SHOW UNIT n: one logical drive, for an operator (or `ctl WAIT`) following one unit.

A room beside commands.py: its COMMANDS are merged into the language there. The two-word key
"SHOW UNIT" is matched before SHOW's own forms, so `SHOW UNITS` still lists them all.
"""

from __future__ import annotations

from . import render
from .grammar import Array, Command, CommandError, Form, Reply, unit_number

USAGE = "SHOW UNIT n"


def _show_unit(array: Array, words: list[str]) -> Reply:
    lun, rest = unit_number(words, USAGE)
    if rest:
        raise CommandError(f"unexpected {rest[0]!r} (usage: {USAGE})")
    units = array.operate("units")  # the registry row its usage names
    unit = next((u for u in units if u.get("lun") == lun), None)
    if unit is None:
        have = ", ".join(str(u.get("lun")) for u in units) or "none"
        raise CommandError(f"no unit {lun} (units: {have})")
    return Reply(unit, render.unit_text(unit))


COMMANDS: dict[str, Command] = {
    "SHOW UNIT": Command(_show_unit, (Form(USAGE, "units", "one unit: its state, progress, drives and spares"),)),
}
