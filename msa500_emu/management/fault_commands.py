"""Path faults and command error injection in the command language.

`FAULT PORTn ...` and `FAULT SESSION ...` reach `fault()` from FAULT's handler in commands.py
(its forms are FAULT_FORMS); INJECT UNIT, SHOW INJECTIONS, SHOW FAULTS and DELETE INJECTION are
this room's COMMANDS, merged into the language there. Every command runs registry rows
(firmware_model.operations: fault_port, fault_session, path_faults, inject, injections,
delete_injection, clear_injections), whose limits and choices are read from there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from . import render
from .grammar import Array, Command, CommandError, Form, Reply, choices, limit, number, options, unit_number, words_of

_PORT = re.compile(r"PORT(\d+)")
_ACTIONS = words_of(choices("fault_port", "action"), " | ")
PORT_USAGE = ("FAULT PORT1|PORT2 DOWN [INITIATOR=iqn] | UP [INITIATOR=iqn] | RESET [INITIATOR=iqn] | "
              "BLACKHOLE [INITIATOR=iqn] | DELAY ms [INITIATOR=iqn] | FLAP s [INITIATOR=iqn] | CLEAR [INITIATOR=iqn]")
SESSION_USAGE = "FAULT SESSION INITIATOR=iqn REINSTATE|CLEAR"
INJECT_USAGE = ("INJECT UNIT n OP=READ|WRITE|ANY|0xNN [LBA=a-b] [COUNT=k|ALWAYS] [INITIATOR=iqn] [PORT=1|2] "
                "ERROR=MEDIUM|HARDWARE|NOT-READY|ABORTED|BUSY|TASK-SET-FULL|SENSE=k/asc/ascq|TIMEOUT|DELAY=ms")
DELETE_USAGE = "DELETE INJECTION id | DELETE INJECTION ALL"
FAULT_FORMS = (
    Form(PORT_USAGE, "fault_port",
         f"a fault of iSCSI port 1 or 2, for every host or one initiator: listener closed, connections reset (DOWN), "
         f"every connection dropped once (RESET), nothing answered (BLACKHOLE), every response held ms "
         f"({limit('fault_port', 'ms')}) (DELAY), down and up every s seconds ({limit('fault_port', 'seconds')}) "
         f"(FLAP); UP and CLEAR end them"),
    Form(SESSION_USAGE, "fault_session",
         "drop the host's connections and refuse its old ISIDs, so it logs in with a new one (REINSTATE); "
         "let them back (CLEAR)"),
)


def handles(target: str) -> bool:
    """Whether `FAULT target ...` is this room's (PORTn or SESSION)."""
    t = target.upper()
    return t == "SESSION" or _PORT.fullmatch(t) is not None


def _amount(text: str, what: str, lim: Any, unit: str) -> float:
    try:
        x = float(text.lower().removesuffix(unit))
    except ValueError:
        unit_name = "milliseconds" if unit == "ms" else "seconds"
        raise CommandError(f"{what} {text!r} is not a number of {unit_name}") from None
    if not math.isfinite(x) or x not in lim:
        raise CommandError(f"{what} {text} outside {lim} {unit}")
    return x


def fault(array: Array, words: list[str]) -> Reply:
    """FAULT PORTn ACTION [value] [INITIATOR=iqn] | FAULT SESSION INITIATOR=iqn REINSTATE|CLEAR."""
    target = words[0].upper()
    if target == "SESSION":
        pos, o = options(words[1:], {"INITIATOR"}, SESSION_USAGE)
        if "INITIATOR" not in o or len(pos) != 1 or pos[0].lower() not in choices("fault_session", "action"):
            raise CommandError(f"usage: {SESSION_USAGE}")
        action = pos[0].lower()
        result = array.operate("fault_session", o["INITIATOR"], action)
        if action == "clear":
            return Reply(result, f"{o['INITIATOR']}: {len(result.get('isids', ()))} retired ISIDs may log in again.")
        return Reply(result, f"{o['INITIATOR']}: {result.get('connections_dropped', 0)} connections dropped; "
                             f"its old ISIDs are refused until FAULT SESSION INITIATOR=... CLEAR.")
    m = _PORT.fullmatch(target)
    assert m is not None
    pos, o = options(words[1:], {"INITIATOR"}, PORT_USAGE)
    port_limit = limit("fault_port", "port")
    try:
        port = int(m.group(1))
    except ValueError:
        raise CommandError(f"{words[0]} is not a port") from None
    if port not in port_limit:
        raise CommandError(f"port {port} outside {port_limit}")
    if not pos or pos[0].lower() not in choices("fault_port", "action"):
        raise CommandError(f"usage: FAULT PORTn {_ACTIONS} [INITIATOR=iqn] (n: port {port_limit})")
    action, rest = pos[0].lower(), pos[1:]
    kw: dict[str, Any] = {}
    if "INITIATOR" in o:
        kw["initiator"] = o["INITIATOR"]
    want = {"delay": 1, "flap": 1}.get(action, 0)
    if len(rest) != want:
        shape = {"delay": " ms", "flap": " s"}.get(action, "")
        raise CommandError(f"usage: FAULT PORT{port} {action.upper()}{shape} [INITIATOR=iqn]")
    if action == "delay":
        kw["ms"] = _amount(rest[0], "DELAY", limit("fault_port", "ms"), "ms")
    if action == "flap":
        kw["seconds"] = _amount(rest[0], "FLAP", limit("fault_port", "seconds"), "s")
    result = array.operate("fault_port", port, action, **kw)
    who = f" for {o['INITIATOR']}" if "INITIATOR" in o else ""
    text = {
        "down": f"Port {port} down{who}.",
        "up": f"Port {port} up{who}.",
        "reset": f"Port {port} reset{who}: {result.get('connections_dropped', 0)} connections dropped.",
        "blackhole": f"Port {port} black hole{who}: nothing is answered until CLEAR.",
        "delay": f"Port {port}{who}: every response held {kw.get('ms', 0):g} ms.",
        "flap": f"Port {port} flapping{who}: down and up every {kw.get('seconds', 0):g} s until CLEAR.",
        "clear": f"Port {port}{who}: {result.get('cleared', 0)} faults cleared.",
    }[action]
    return Reply(result, text)


# -- INJECT UNIT, SHOW INJECTIONS, DELETE INJECTION, SHOW FAULTS ----------------------------
def _inject(array: Array, words: list[str]) -> Reply:
    lun, rest = unit_number(words, INJECT_USAGE)
    pos, o = options(rest, {"OP", "LBA", "COUNT", "INITIATOR", "PORT", "ERROR"}, INJECT_USAGE)
    if pos:
        raise CommandError(f"unexpected {pos[0]!r} (usage: {INJECT_USAGE})")
    for key in ("OP", "ERROR"):
        if key not in o:
            raise CommandError(f"{key}= missing (usage: {INJECT_USAGE})")
    error, _, value = o["ERROR"].partition("=")
    error = error.lower()
    if error not in choices("inject", "error"):
        raise CommandError(f"ERROR={o['ERROR']} not one of {words_of(choices('inject', 'error'), ', ')}")
    kw: dict[str, Any] = {}
    if error in ("sense", "delay"):
        if not value:
            raise CommandError(f"ERROR={error.upper()}= needs {'k/asc/ascq' if error == 'sense' else 'ms'}")
        if error == "sense":
            kw["sense"] = value
        else:
            kw["delay_ms"] = _amount(value, "DELAY", limit("inject", "delay_ms"), "ms")
    elif value:
        raise CommandError(f"ERROR={o['ERROR']}: only SENSE= and DELAY= take a value")
    if "LBA" in o:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", o["LBA"].strip())
        if not m:
            raise CommandError(f"LBA={o['LBA']} is not a block or a range a-b")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        lba_limit = limit("inject", "lba_first")
        if first not in lba_limit or last not in lba_limit:
            raise CommandError(f"LBA={o['LBA']} outside {lba_limit}")
        kw["lba_first"], kw["lba_last"] = first, last
    if "COUNT" in o:
        if o["COUNT"].upper() == "ALWAYS":
            kw["always"] = True
        else:
            kw["count"] = number(o["COUNT"], "COUNT", limit("inject", "count"))
    if "PORT" in o:
        kw["port"] = number(o["PORT"], "PORT", limit("inject", "port"))
    if "INITIATOR" in o:
        kw["initiator"] = o["INITIATOR"]
    result = array.operate("inject", lun, o["OP"], error, **kw)
    return Reply(result, f"Injection {result.get('id')} on unit {lun}: {result.get('op')} answered "
                         f"{result.get('error')}, {_times(result)}.")


def _times(row: Mapping[str, Any]) -> str:
    return "always" if row.get("always") else f"{row.get('remaining')} more times"


def injections_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "No injections."
    cells = [[str(r["id"]), str(r["unit"]), str(r["op"]),
              "all" if r["lba_first"] is None else f"{r['lba_first']}-{r['lba_last']}",
              "always" if r["always"] else str(r["remaining"]), str(r["initiator"] or "any"),
              str(r["port"] or "any"), str(r["error"]), str(r["fired"])] for r in rows]
    return "\n".join(render.table(["ID", "UNIT", "OP", "LBA", "REMAINING", "INITIATOR", "PORT", "ERROR", "FIRED"],
                                  cells, right=(0, 1, 4, 8)))


def faults_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "No port or session faults."
    cells = [[str(r["port"] or "any"), str(r["fault"]).upper(), str(r["initiator"] or "every host"),
              str(r["detail"] or "-"), render.when(r["since"]) if r.get("since") else "-"] for r in rows]
    return "\n".join(render.table(["PORT", "FAULT", "INITIATOR", "DETAIL", "SINCE"], cells))


def _show(array: Array, words: list[str], what: str) -> Reply:
    if words:
        raise CommandError(f"unexpected {words[0]!r} (usage: SHOW {what})")
    if what == "INJECTIONS":
        rows = array.operate("injections")
        return Reply(rows, injections_text(rows))
    rows = array.operate("path_faults")
    return Reply(rows, faults_text(rows))


def _delete(array: Array, words: list[str]) -> Reply:
    if len(words) != 1:
        raise CommandError(f"usage: {DELETE_USAGE}")
    if words[0].upper() == "ALL":
        result = array.operate("clear_injections")
        return Reply(result, f"{result.get('deleted', 0)} injections deleted.")
    ident = number(words[0], "injection", limit("inject", "count"))
    result = array.operate("delete_injection", ident)
    return Reply(result, f"Injection {ident} deleted.")


COMMANDS: dict[str, Command] = {
    "INJECT UNIT": Command(_inject, (Form(INJECT_USAGE, "inject",
                                          "answer unit n's matching commands (LBA: blocks a-b; COUNT: k times, "
                                          "default once) with an error, BUSY, TASK SET FULL, no answer or a delay"),)),
    "SHOW INJECTIONS": Command(lambda a, w: _show(a, w, "INJECTIONS"), (Form("SHOW INJECTIONS", "injections"),)),
    "SHOW FAULTS": Command(lambda a, w: _show(a, w, "FAULTS"), (Form("SHOW FAULTS", "path_faults"),)),
    "DELETE INJECTION": Command(_delete, (Form("DELETE INJECTION id", "delete_injection"),
                                          Form("DELETE INJECTION ALL", "clear_injections"))),
}
