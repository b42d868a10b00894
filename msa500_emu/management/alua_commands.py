"""ALUA: the target port groups as hosts see them (one per port), a port fault's access state,
and how long a change reports `transitioning`.

A room beside commands.py: its COMMANDS are merged into the language there.
"""

from __future__ import annotations

import math
from typing import Any

from firmware_model import operations as ops

from . import render
from .grammar import Array, Command, CommandError, Form, Reply, limit, options, words_of

USAGE = f"ALUA STATUS | ALUA TRANSITION=ms | ALUA PORT n {words_of(ops.PORT_ALUA)}"


def alua_text(st: dict[str, Any]) -> str:
    """Each port's group and state, then the transition time (ALUA STATUS)."""
    rows = [[str(p["port"]), str(p["group"]), str(p["state"]), str(p["target_state"]), p["fault"] or "-"]
            for p in st.get("ports", [])]
    lines = render.table(["Port", "Group", "State", "Target state", "Port fault"], rows, right=(0, 1))
    left = st.get("transition_left_ms")
    items = [("TPGS", str(st.get("tpgs", "implicit"))),
             ("Transition time", f"{render.value(st.get('transition_ms'))} ms"),
             ("Transition left", "-" if left is None else f"{render.value(left)} ms")]
    return "\n".join(["Target port groups:", *lines, *render.pairs(items)])


def _alua(array: Array, words: list[str]) -> Reply:
    pos, o = options(words, {"TRANSITION"}, USAGE)
    if o and not pos:
        text = o["TRANSITION"].lower().removesuffix("ms")
        try:
            ms = float(text)
        except ValueError:
            raise CommandError(f"TRANSITION={o['TRANSITION']} is not a number of milliseconds") from None
        lim = limit("set_alua", "transition_ms")
        if not math.isfinite(ms) or ms not in lim:
            raise CommandError(f"TRANSITION={o['TRANSITION']} outside {lim} ms")
        st = array.operate("set_alua", transition_ms=ms)
        return Reply(st, f"Access state changes report transitioning for {render.value(ms)} ms.")
    if o or not pos:
        raise CommandError(f"usage: {USAGE}")
    head = pos[0].upper()
    if head == "STATUS" and len(pos) == 1:
        st = array.operate("alua_status")
        return Reply(st, alua_text(st))
    if head.startswith("PORT") and len(pos) in (2, 3):
        if len(pos) == 3:  # PORT 2 OFFLINE, or PORT2 OFFLINE
            pos = [head + pos[1], pos[2]]
        try:
            port = int(pos[0][4:])
        except ValueError:
            raise CommandError(f"{pos[0]!r} is not PORT 1 or PORT 2 (usage: {USAGE})") from None
        if port not in ops.PORTS:
            raise CommandError(f"port {port} outside {ops.PORTS}")
        state = pos[1].lower()
        if state not in ops.PORT_ALUA:
            raise CommandError(f"port state {pos[1]!r} not one of {words_of(ops.PORT_ALUA, ', ')}")
        st = array.operate("set_port_alua", port=port, state=state)
        view: dict[str, Any] = next((p for p in st.get("ports", []) if p.get("port") == port), {})
        shown, heading = view.get("state", state), view.get("target_state", state)
        return Reply(st, f"Port {port}: {shown}" + (f", then {heading}." if heading != shown else "."))
    raise CommandError(f"unknown ALUA command {pos[0]!r} (usage: {USAGE})")


COMMANDS: dict[str, Command] = {
    "ALUA": Command(_alua, (
        Form("ALUA STATUS", "alua_status"),
        Form("ALUA TRANSITION=ms", "set_alua"),
        Form(f"ALUA PORT n {words_of(ops.PORT_ALUA)}", "set_port_alua"),
    )),
}
