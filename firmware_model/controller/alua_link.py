"""The controller's ALUA operations: port faults' access states, the transition time, a view.

RSO decides the ports' states through rso_link; a port fault (another room's FAULT PORTn
DOWN) imposes `unavailable` or `offline` on top with `set_port_alua`. The transition time is
kept in NVRAM ("alua") so a restarted shelf transitions as it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..scsi.alua import PORT_ALUA_STATES, state_name
from .errors import ControllerError

if TYPE_CHECKING:
    from .core import Controller


class AluaLink:
    def __init__(self, c: Controller) -> None:
        self.c = c
        # NVRAM's section as read, until the target exists: a save during start-up (a crash's
        # interrupted writes replayed over a media error remap the drive, which saves NVRAM)
        # must write it back unchanged, not fail for want of the target
        self.loaded: dict[str, Any] = {}

    def remember(self, raw: dict[str, Any] | None) -> None:
        self.loaded = dict(raw or {})

    def load(self, raw: dict[str, Any] | None) -> None:
        """The transition time from NVRAM (checked by nvram_check before this runs)."""
        self.remember(raw)
        if raw:
            self.c.target.alua.set_transition(float(raw.get("transition_ms", 0)))

    def to_dict(self) -> dict[str, Any]:
        target = getattr(self.c, "target", None)
        if target is None:
            return dict(self.loaded)
        return {"transition_ms": round(target.alua.transition_s * 1000, 3)}

    def status(self) -> dict[str, Any]:
        """Each port's reported, wanted and fault state, and the transition time."""
        groups = self.c.target.alua
        ports = []
        for p in sorted(groups.shown):
            fault = groups.fault.get(p)
            ports.append({
                "port": p,
                "group": p,
                "state": state_name(groups.shown[p]),
                "target_state": state_name(groups.wanted(p)),
                "fault": None if fault is None else state_name(fault),
                "implicit_change": p in groups.implicit,
            })
        due = groups.next_deadline()
        left = None if due is None else max(0.0, due - self.c.clock.now())
        return {
            "tpgs": "implicit",
            "transition_ms": round(groups.transition_s * 1000, 3),
            "transition_left_ms": None if left is None else round(left * 1000, 3),
            "ports": ports,
        }

    def set_transition(self, transition_ms: float) -> dict[str, Any]:
        try:
            self.c.target.alua.set_transition(transition_ms)
        except ValueError as exc:
            raise ControllerError(str(exc)) from None
        self.c.nvram.save()
        return self.status()

    def set_port(self, port: int, state: str) -> dict[str, Any]:
        """A port fault's state: `unavailable`, `offline`, or `active` to lift it (RSO decides again)."""
        key = state.lower() if isinstance(state, str) else state
        if key not in PORT_ALUA_STATES:
            raise ControllerError(f"port state {state!r} not one of {', '.join(PORT_ALUA_STATES)}")
        if port not in self.c.target.alua.base:
            raise ControllerError(f"port {port}: ports are {', '.join(map(str, sorted(self.c.target.alua.base)))}")
        self.c.target.set_port_fault(port, PORT_ALUA_STATES[key])
        return self.status()
