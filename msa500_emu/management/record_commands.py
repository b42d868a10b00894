"""RECORD START / STOP / STATUS (a recording of the array: docs/recording.md) and RECORD APPLY, the
one registry operation by name that `msa500-emu replay --api URL` sends for each recorded one.

A room beside commands.py: its COMMANDS are merged into the language there.
"""

from __future__ import annotations

import json
from typing import Any

from firmware_model import operations as ops

from . import render
from .grammar import Array, Command, CommandError, Form, Reply, options, parse_size

USAGE = "RECORD START name [DATA_CAP=n] | RECORD STOP | RECORD STATUS | RECORD APPLY name [ARGS=x]"
NOT_APPLIED = frozenset({"record_start", "record_stop", "record_status"})  # a replay never records


def record_text(st: dict[str, Any]) -> str:
    """RECORD STATUS, and what START and STOP answer."""
    if not st.get("recording") and not st.get("file"):
        return "Not recording."
    head = "Recording:" if st.get("recording") else "Recording ended:"
    items = [("File", str(st["file"])), ("Records", str(st["records"])), ("Commands", str(st["commands"])),
             ("Operations", str(st["operations"])), ("Events", str(st["events"])),
             ("Written", render.size(st["bytes"])),
             ("Data-out kept", f"{render.size(st['data_kept_bytes'])} of {render.size(st['data_cap_bytes'])}"
                               + (" (cap reached: digests only since)" if st.get("capped") else "")),
             ("Duration", f"{render.value(st['seconds'])} s")]
    if st.get("error"):
        items.append(("Error", str(st["error"])))
    return "\n".join([head, *render.pairs(items)])


def _apply(array: Array, words: list[str]) -> Reply:
    pos, o = options(words, {"ARGS"}, USAGE)
    if len(pos) != 1:
        raise CommandError(f"usage: {USAGE}")
    name = pos[0].lower()
    if name not in ops.OPERATIONS or name in NOT_APPLIED:
        known = ", ".join(sorted(set(ops.OPERATIONS) - NOT_APPLIED))
        raise CommandError(f"no operation {pos[0]!r} to apply (known: {known})")
    try:
        args = json.loads(o.get("ARGS", "{}"))
    except ValueError:
        raise CommandError("ARGS= is not a JSON object (ARGS='{\"bay\": 3, \"action\": \"fail\"}')") from None
    if not isinstance(args, dict):
        raise CommandError("ARGS= is not a JSON object (ARGS='{\"bay\": 3, \"action\": \"fail\"}')")
    result = array.operate(name, **args)
    return Reply(result, f"Applied {name}.")


def _record(array: Array, words: list[str]) -> Reply:
    if not words:
        raise CommandError(f"usage: {USAGE}")
    head, rest = words[0].upper(), words[1:]
    if head == "APPLY":
        return _apply(array, rest)
    if head == "START":
        pos, o = options(rest, {"DATA_CAP"}, USAGE)
        if len(pos) != 1:
            raise CommandError(f"RECORD START: one file name (usage: {USAGE})")
        cap = parse_size(o["DATA_CAP"]) if "DATA_CAP" in o else None
        st = array.operate("record_start", file=pos[0], **({} if cap is None else {"data_cap": cap}))
        return Reply(st, record_text(st))
    if head in ("STOP", "STATUS") and not rest:
        st = array.operate("record_stop" if head == "STOP" else "record_status")
        return Reply(st, record_text(st))
    raise CommandError(f"unknown RECORD command {' '.join(words)!r} (usage: {USAGE})")


COMMANDS: dict[str, Command] = {
    "RECORD": Command(_record, (
        Form("RECORD START name [DATA_CAP=n]", "record_start",
             "record commands, operations and events into STATE_DIR/recordings/name (data-out in full up "
             "to DATA_CAP, default 64 MiB)"),
        Form("RECORD STOP", "record_stop"),
        Form("RECORD STATUS", "record_status"),
        Form("RECORD APPLY name [ARGS=x]", "",
             "run one registry operation by name, JSON arguments (what replay --api sends)"),
    )),
}
