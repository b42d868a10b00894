"""SNAPSHOT SAVE/RESTORE/LIST/DELETE and RESET: the whole shelf put aside and back (docs/snapshots.md).

A room beside commands.py: its COMMANDS are merged into the language there. The work is the
process's (msa500_emu/snapshot): these only parse and render.
"""

from __future__ import annotations

from typing import Any

from firmware_model import operations as ops

from . import render
from .grammar import Array, Command, CommandError, Form, Reply

_SUBS = {"SAVE": "snapshot_save", "RESTORE": "snapshot_restore", "DELETE": "snapshot_delete", "LIST": "snapshots"}
MIB = 1 << 20


def list_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No snapshots (SNAPSHOT SAVE name takes one; RESET goes back to the state at start)."
    table = render.table(["NAME", "TAKEN", "FILES", "SIZE (MiB)", "COPY"],
                         [[str(r.get("name")), render.when(r.get("taken"))[:19], str(r.get("files", 0)),
                           _mib(r), str(r.get("method", "-"))] for r in rows], right=(2, 3))
    return "\n".join(table)


def _mib(r: dict[str, Any]) -> str:
    return f"{int(r.get('stored_bytes') or 0) / MIB:.1f}"


def _done(verb: str, r: dict[str, Any]) -> str:
    size = f"{r.get('files', 0)} files, {_mib(r)} MiB stored ({r.get('method', 'sparse')} copies)"
    if verb == "SAVE":
        return f"Snapshot {r.get('name')} saved: {size}."
    if verb == "DELETE":
        return f"Snapshot {r.get('name')} deleted ({_mib(r)} MiB freed)."
    what = f"snapshot {r['name']}" if r.get("name") else "the state at start"
    luns = "; the set of LUNs changed (3F/0E follows)" if r.get("luns_changed") else ""
    n = int(r.get("sessions") or 0)
    return (f"Shelf put back to {what}: {size}. {n} session{' stays' if n == 1 else 's stay'} logged in and see "
            f"29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED at their next command{luns}.")


def _snapshot(array: Array, words: list[str]) -> Reply:
    sub = words[0].upper() if words else ""
    op = _SUBS.get(sub)
    if op is None:
        raise CommandError(f"SNAPSHOT {words[0] if words else 'what'}? (usage: {COMMANDS['SNAPSHOT'].usage})")
    rest = words[1:]
    if sub == "LIST":
        if rest:
            raise CommandError(f"unexpected {rest[0]!r} (usage: SNAPSHOT LIST)")
        rows = array.operate(op)
        return Reply(rows, list_text(rows if isinstance(rows, list) else []))
    if len(rest) != 1:
        raise CommandError(f"usage: SNAPSHOT {sub} name")
    result = array.operate(op, rest[0])
    return Reply(result, _done(sub, result))


def _reset(array: Array, words: list[str]) -> Reply:
    if words:
        raise CommandError(f"unexpected {words[0]!r} (usage: RESET)")
    result = array.operate("reset")
    return Reply(result, _done("RESET", result))


COMMANDS: dict[str, Command] = {
    "SNAPSHOT": Command(_snapshot, (
        Form("SNAPSHOT SAVE name", "snapshot_save",
             f"copy the whole shelf under name ({ops.SNAPSHOT_NAME_MAX} characters at most: letters, digits, "
             "._-); a taken name is refused"),
        Form("SNAPSHOT RESTORE name", "snapshot_restore"),
        Form("SNAPSHOT LIST", "snapshots"),
        Form("SNAPSHOT DELETE name", "snapshot_delete"))),
    "RESET": Command(_reset, (Form("RESET", "reset"),)),
}
assert all(f.op in ops.OPERATIONS for c in COMMANDS.values() for f in c.forms)
