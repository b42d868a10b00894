"""Target port groups and their asymmetric access states (SPC-4 5.15), one group per port.

A port's state is what its owner asks for (RSO's port states: `base`) unless a port fault
overrides it (`unavailable` or `offline`: `fault`). With a transition time set, every change
passes through `transitioning` first and the new state applies when the time is up (the
controller's clock calls `advance`), so hosts' retry logic on 04/0A can be exercised. Pure:
the target turns the changes this returns into unit attentions and its NOT READY gate.
"""

from __future__ import annotations

import math

from firmware_model.scsi.constants import AluaState

__all__ = ["MAX_TRANSITION_MS", "PORT_ALUA_STATES", "PortGroups", "rtpg_data", "state_name"]

# REPORT TARGET PORT GROUPS carries the implicit transition time in one byte of seconds.
MAX_TRANSITION_MS = 255_000
# What a port fault may set: `active` lifts the fault (the port follows RSO again).
PORT_ALUA_STATES: dict[str, AluaState | None] = {
    "active": None,
    "unavailable": AluaState.UNAVAILABLE,
    "offline": AluaState.OFFLINE,
}
_NAMES: dict[int, str] = {
    AluaState.ACTIVE_OPTIMIZED: "active/optimized",
    AluaState.ACTIVE_NON_OPTIMIZED: "active/non-optimized",
    AluaState.STANDBY: "standby",
    AluaState.UNAVAILABLE: "unavailable",
    AluaState.OFFLINE: "offline",
    AluaState.TRANSITIONING: "transitioning",
}
# Supported states in each descriptor: T_SUP, O_SUP, U_SUP, S_SUP, AO_SUP (SPC-4 6.37).
_SUPPORTED = 0x80 | 0x40 | 0x08 | 0x04 | 0x01
_ACTIVE = (AluaState.ACTIVE_OPTIMIZED, AluaState.ACTIVE_NON_OPTIMIZED)


def state_name(state: int) -> str:
    """The words sg_rtpg and scsi_dh_alua print for a state."""
    return _NAMES.get(state, f"state {state:#x}")


class PortGroups:
    """The shown, wanted and pending access state of each port's target port group."""

    def __init__(self, ports: tuple[int, ...] = (1, 2)) -> None:
        self.base: dict[int, int] = {p: AluaState.ACTIVE_OPTIMIZED for p in ports}
        self.fault: dict[int, int] = {}  # port -> the state a port fault imposes
        self.shown: dict[int, int] = dict(self.base)  # what RTPG reports and the gate applies
        self.pending: dict[int, int] = {}  # port -> the state its transition ends in
        self.until: float | None = None  # when the pending transitions end
        self.transition_s = 0.0
        self.implicit: set[int] = set()  # ports whose state an implicit transition set

    def wanted(self, port: int) -> int:
        return self.fault.get(port, self.base[port])

    def inaccessible(self) -> dict[int, int]:
        """Ports whose logical drives refuse media commands, with the state that refuses them."""
        return {p: st for p, st in self.shown.items() if st not in _ACTIVE}

    def update(self, now: float) -> list[int]:
        """Follow a change of `base` or `fault`; returns the ports whose shown state changed."""
        changed: list[int] = []
        started = False
        for p in sorted(self.base):
            want = self.wanted(p)
            if want == self.pending.get(p, self.shown[p]):
                continue
            self.implicit.add(p)
            if self.transition_s > 0:
                self.pending[p] = want
                started = True
                if self.shown[p] != AluaState.TRANSITIONING:
                    self.shown[p] = AluaState.TRANSITIONING
                    changed.append(p)
            else:
                self.pending.pop(p, None)
                self.shown[p] = want
                changed.append(p)
        if started:
            self.until = now + self.transition_s  # a change during a transition restarts its time
        elif not self.pending:
            self.until = None
        return changed

    def next_deadline(self) -> float | None:
        return self.until

    def advance(self, now: float) -> list[int]:
        """End the transitions that are due; returns the ports whose shown state changed."""
        if self.until is None or now < self.until:
            return []
        done = sorted(self.pending)
        for p in done:
            self.shown[p] = self.pending[p]
        self.pending.clear()
        self.until = None
        return done

    def set_transition(self, ms: float) -> None:
        if not 0 <= ms <= MAX_TRANSITION_MS:
            raise ValueError(f"transition time {ms:g} ms outside 0..{MAX_TRANSITION_MS}")
        self.transition_s = ms / 1000.0

    @property
    def transition_seconds(self) -> int:
        """IMPLICIT TRANSITION TIME: whole seconds, rounded up."""
        return min(255, math.ceil(self.transition_s))


def rtpg_data(states: dict[int, int], implicit: set[int], extended: bool, transition_s: int) -> bytes:
    """REPORT TARGET PORT GROUPS parameter data: one group per port (group id = port number).

    `extended`: PARAMETER DATA FORMAT 001b, whose header carries format 001b in byte 4 and the
    implicit transition time in byte 5; otherwise the length-only header.
    """
    body = bytearray()
    for port in sorted(states):
        # PREF=0, the state; supported states; group id; STATUS CODE 02h after an implicit change
        body += bytes((states[port] & 0x0F, _SUPPORTED)) + port.to_bytes(2, "big")
        body += bytes((0, 0x02 if port in implicit else 0, 0, 1))
        body += bytes(2) + port.to_bytes(2, "big")  # the one relative target port of the group
    if extended:
        return (len(body) + 4).to_bytes(4, "big") + bytes((0x10, transition_s & 0xFF, 0, 0)) + bytes(body)
    return len(body).to_bytes(4, "big") + bytes(body)
