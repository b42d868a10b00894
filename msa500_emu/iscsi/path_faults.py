"""Path faults of the iSCSI ports, shaped like real ones: `FAULT PORTn ...`, `FAULT SESSION ...`.

Per port, for every host or one initiator (`initiator`):
- down: the listener is closed (connects are refused) and the connections reset (RST); for one
  initiator its connections are reset and its logins closed at the transport, with no answer;
- blackhole: nothing is answered and no RST is sent; what a host sends waits unread (as TCP holds
  it while a path drops packets) and is carried on when the fault clears, so nothing is lost
  if neither side gave up by then; the target's own timers (NOP-In, login timeout) stand still;
- delay: every byte the port sends is held `ms` milliseconds (logins, NOP-Ins and responses);
- flap: down at once, up `seconds` seconds later, and so on until cleared;
- reset (one shot): every connection dropped once, the listener stays.
`reinstate` (per initiator, every port): its connections are dropped and a login that tries to
reinstate one of its old ISIDs is refused with 0x0202 (RFC 7143 11.13.5: an initiator error, "the
request should not be tried again", so the host must start a new session, with a new ISID);
continuing one (TSIH set) gets 0x020A, the session does not exist. That is the trap behind
fence-agents issue #517: reservation keys stay registered on the old I_T nexus.

The shell (portal.py) asks `PortState` once per event while a port has a fault (one falsy test
otherwise); the logic is here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware_model.events import EventCode

from .connection import OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER
from .constants import LoginStatus
from .node import TargetNode

if TYPE_CHECKING:
    from .portal import Portal, PortalProtocol

log = logging.getLogger("msa500_emu.iscsi")

LASTING = ("down", "blackhole", "delay", "flap")  # faults that stay until UP or CLEAR
BLACKHOLE_TICK_S = 1.0  # how often a blackholed connection's timer looks whether the fault is over


def initiator_of(proto: PortalProtocol) -> str | None:
    """The initiator name of a connection (lower case), once its first login PDU named it."""
    conn = proto.conn
    if conn.session is not None:
        return conn.session.initiator.lower()
    if conn.login is not None and conn.login.initiator:
        return conn.login.initiator.lower()
    return None


@dataclass
class PortState:
    """What the shell of one port asks; recomputed whenever a fault of the port changes."""

    any: bool = False
    down_all: bool = False
    down: set[str] = field(default_factory=set)
    blackhole_all: bool = False
    blackhole: set[str] = field(default_factory=set)
    delay_all: float = 0.0
    delay: dict[str, float] = field(default_factory=dict)

    def blackholed(self, proto: PortalProtocol) -> bool:
        return self.blackhole_all or (bool(self.blackhole) and initiator_of(proto) in self.blackhole)

    def delay_s(self, proto: PortalProtocol) -> float:
        if not self.delay:
            return self.delay_all
        name = initiator_of(proto)
        return max(self.delay_all, self.delay.get(name, 0.0) if name else 0.0)


@dataclass
class ConnHold:
    """A connection's share of a fault: input held back, output queued for later."""

    withheld: bytearray = field(default_factory=bytearray)
    reading_paused: bool = False
    queue: deque[tuple[float, list[Any], bool]] = field(default_factory=deque)  # (due, chunks, close after)
    queued_bytes: int = 0
    close_queued: bool = False
    held_conn: bool = False  # we stopped the connection taking PDUs (queue above the high water)
    timer: asyncio.TimerHandle | None = None


def _hold(proto: PortalProtocol) -> ConnHold:
    if proto.fault is None:
        proto.fault = ConnHold()
    return proto.fault


# -- the shell's hooks (portal.py calls them only while its port has a fault) ----------------
def hold_input(proto: PortalProtocol, data: bytes) -> bool:
    """Blackholed: keep the bytes unread (TCP would), stop reading; True when held."""
    if not proto.owner.faults.blackholed(proto):
        return False
    h = _hold(proto)
    h.withheld += data
    t = proto.transport
    if t is not None and not h.reading_paused:
        h.reading_paused = True
        t.pause_reading()
    return True


def hold_output(proto: PortalProtocol) -> bool:
    """Blackholed: leave the output in the connection. Delayed: queue it. True when the shell
    must not write (nor close) now."""
    state = proto.owner.faults
    if state.blackholed(proto):
        return True
    delay = state.delay_s(proto)
    h = proto.fault
    if delay <= 0 and (h is None or not h.queue):
        return False
    h = _hold(proto)
    out = proto.conn.take_output()
    close = proto.conn.close_after_flush and not h.close_queued
    if out or close:
        h.close_queued = h.close_queued or close
        h.queue.append((proto.loop.time() + delay, out, close))
        h.queued_bytes += sum(len(c) for c in out)
        if h.queued_bytes >= OUTPUT_HIGH_WATER and not h.held_conn:
            h.held_conn = True
            proto.conn.paused = True  # take no PDU while so much waits: the window closes instead
        _arm_writer(proto, h)
    return True


def hold_timer(proto: PortalProtocol) -> bool:
    """Blackholed: the target's timers stand still (no NOP-In goes out, no timeout fires)."""
    if not proto.owner.faults.blackholed(proto):
        return False
    if proto.timer is not None:
        proto.timer.cancel()
    proto.timer = proto.loop.call_later(BLACKHOLE_TICK_S, proto._on_timer)
    return True


def _arm_writer(proto: PortalProtocol, h: ConnHold) -> None:
    if h.timer is None and h.queue:
        h.timer = proto.loop.call_at(h.queue[0][0], _write_due, proto, h)


def _write_due(proto: PortalProtocol, h: ConnHold) -> None:
    h.timer = None
    t = proto.transport
    if t is None:
        h.queue.clear()
        return
    now = proto.loop.time()
    while h.queue and h.queue[0][0] <= now:
        _, out, close = h.queue.popleft()
        h.queued_bytes -= sum(len(c) for c in out)
        if out and not t.is_closing():
            t.writelines(out)
        if close and not t.is_closing():
            t.close()
    if h.held_conn and h.queued_bytes <= OUTPUT_LOW_WATER:
        h.held_conn = False
        proto.resume_writing()
    _arm_writer(proto, h)
    _forget_if_idle(proto, h)


def _forget_if_idle(proto: PortalProtocol, h: ConnHold) -> None:
    """Nothing held any more: the shell's flushes skip this module again."""
    if not (h.queue or h.withheld or h.reading_paused or h.held_conn) and proto.fault is h:
        proto.fault = None


def release(proto: PortalProtocol) -> None:
    """The fault is over for this connection: what waited is read, answered and written."""
    h = proto.fault
    if proto.transport is None:
        return
    conn = proto.conn
    conn.output_drained()  # the host was there all along: no NOP timeout for the time it was cut off
    if h is not None and (h.withheld or h.reading_paused):
        data, h.withheld = bytes(h.withheld), bytearray()
        if h.reading_paused:
            h.reading_paused = False
            proto.transport.resume_reading()
        if data:
            proto.data_received(data)
    if proto.transport is None:
        return
    proto._flush()
    if not conn.closed and not conn.close_after_flush:
        proto._arm_timer()
    if h is not None:
        _forget_if_idle(proto, h)


def reset(proto: PortalProtocol, reason: str) -> None:
    """Drop a connection as a port reset does: the host gets an RST, the session ends."""
    proto.conn.request_close(reason)
    t = proto.transport
    if t is None:
        return
    sock = t.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    t.abort()


# -- the faults themselves -----------------------------------------------------------------
@dataclass
class PortFault:
    port: int
    kind: str  # one of LASTING
    initiator: str | None = None  # lower case; None: every host
    ms: float | None = None
    seconds: float | None = None
    since: float = field(default_factory=time.time)
    flapped_down: bool = False
    timer: asyncio.TimerHandle | None = None

    def row(self) -> dict[str, Any]:
        detail = (f"{self.ms:g} ms" if self.kind == "delay" else
                  f"every {self.seconds:g} s, now {'down' if self.flapped_down else 'up'}" if self.kind == "flap"
                  else "")
        return {"port": self.port, "fault": self.kind, "initiator": self.initiator, "detail": detail,
                "ms": self.ms, "seconds": self.seconds, "since": round(self.since, 3)}


Emit = Callable[[EventCode, str], object]
Schedule = Callable[[Coroutine[Any, Any, None]], None]


class PathFaults:
    """The path faults of one emulator's portals; the node's login gate."""

    def __init__(self, node: TargetNode, portals: list[Portal], emit: Emit, schedule: Schedule,
                 powered: Callable[[], bool] = lambda: True, alua: Callable[[int, str], object] | None = None
                 ) -> None:
        self.node = node
        self.portals = {p.info.port: p for p in portals}
        self.emit = emit
        self.schedule = schedule
        self.powered = powered
        self.alua = alua
        self.faults: list[PortFault] = []
        self.retired: dict[str, set[bytes]] = {}  # initiator -> ISIDs it may not log in with again
        node.login_gate = self.gate

    # -- asked by the login and the process --------------------------------------------
    def gate(self, initiator: str, isid: bytes, port: int) -> tuple[int | None, str] | None:
        name = initiator.lower()
        portal = self.portals.get(port)
        if portal is not None and name in portal.faults.down:
            return None, f"port {port} is down for {initiator} (FAULT PORT{port} DOWN INITIATOR=)"
        if isid in self.retired.get(name, ()):
            return (LoginStatus.AUTHORIZATION_FAILURE,
                    f"ISID 0x{isid.hex()} of {initiator} was retired (FAULT SESSION REINSTATE): a new ISID logs in")
        return None

    def close(self) -> None:
        """The process stops: no flap may open a listener again."""
        for f in self.faults:
            if f.timer is not None:
                f.timer.cancel()
        self.faults.clear()

    def keeps_down(self, port: int) -> bool:
        """Whether the port's listener stays closed (power-on must not open it)."""
        portal = self.portals.get(port)
        return portal is not None and portal.faults.down_all

    # -- FAULT PORTn ... ------------------------------------------------------------------
    def fault_port(self, port: int, action: str, initiator: str | None = None, ms: float | None = None,
                   seconds: float | None = None) -> dict[str, Any]:
        portal = self.portals[port]
        who = initiator.lower() if initiator else None
        scope = f"port {port}" + (f" for {initiator}" if initiator else "")
        if action == "reset":
            n = self._reset(portal, who, f"port {port} reset")
            self.emit(EventCode.PORT_FAULT, f"{scope}: reset, {n} connections dropped")
            return {"port": port, "action": action, "initiator": who, "connections_dropped": n}
        if action == "clear":
            n = self._end(port, who, LASTING)
            self.emit(EventCode.PORT_FAULT_CLEARED, f"{scope}: {n} faults cleared")
            return {"port": port, "action": action, "initiator": who, "cleared": n}
        if action == "up":
            n = self._end(port, who, ("down", "flap"))
            self.emit(EventCode.PORT_FAULT_CLEARED, f"{scope}: up")
            return {"port": port, "action": action, "initiator": who, "cleared": n}
        self._end(port, who, ("down", "flap") if action in ("down", "flap") else (action,), quiet=True)
        fault = PortFault(port, action, who, ms=ms if action == "delay" else None,
                          seconds=seconds if action == "flap" else None, flapped_down=action == "flap")
        self.faults.append(fault)
        if action == "flap":
            self._flap(fault)
        self._apply(port)
        what = (f"every response held {fault.ms:g} ms" if fault.ms is not None else
                f"flapping, down and up every {fault.seconds:g} s" if fault.seconds is not None else
                "black hole (nothing answered)" if action == "blackhole" else "down")
        self.emit(EventCode.PORT_FAULT, f"{scope}: {what}")
        return {"port": port, "action": action, "initiator": who, "faults": self.rows(port)}

    def _end(self, port: int, who: str | None, kinds: tuple[str, ...], quiet: bool = False) -> int:
        """End the faults of `kinds` on `port` (of one initiator, or all of them when None)."""
        gone = [f for f in self.faults if f.port == port and f.kind in kinds and (who is None or f.initiator == who)]
        for f in gone:
            if f.timer is not None:
                f.timer.cancel()
            self.faults.remove(f)
        if gone:
            self._apply(port)
            if not quiet:
                portal = self.portals[port]
                for proto in list(portal.connections):
                    release(proto)
        return len(gone)

    def _flap(self, fault: PortFault) -> None:
        fault.timer = asyncio.get_running_loop().call_later(fault.seconds or 1.0, self._toggle, fault)

    def _toggle(self, fault: PortFault) -> None:
        if fault not in self.faults:
            return
        fault.flapped_down = not fault.flapped_down
        log.info("port %d%s flaps %s", fault.port, f" for {fault.initiator}" if fault.initiator else "",
                 "down" if fault.flapped_down else "up")
        self._apply(fault.port)
        self._flap(fault)

    def _apply(self, port: int) -> None:
        """Recompute the port's state from its faults; open or close its listener, reset whom it cuts off."""
        portal = self.portals[port]
        mine = [f for f in self.faults if f.port == port]
        st = PortState(any=bool(mine))
        for f in mine:
            down = f.kind == "down" or (f.kind == "flap" and f.flapped_down)
            if down and f.initiator is None:
                st.down_all = True
            elif down and f.initiator is not None:
                st.down.add(f.initiator)
            elif f.kind == "blackhole" and f.initiator is None:
                st.blackhole_all = True
            elif f.kind == "blackhole" and f.initiator is not None:
                st.blackhole.add(f.initiator)
            elif f.kind == "delay" and f.initiator is None:
                st.delay_all = (f.ms or 0.0) / 1000.0
            elif f.kind == "delay" and f.initiator is not None:
                st.delay[f.initiator] = (f.ms or 0.0) / 1000.0
        was_down = portal.faults.down_all
        portal.faults = st
        if st.down_all and not was_down:
            if portal.server is not None:
                portal.server.close()
            self._reset(portal, None, f"port {port} down")
            self._alua(port, True)
        elif was_down and not st.down_all:
            self._alua(port, False)
            if self.powered():
                self.schedule(self._listen(portal))
        if st.down:
            self._reset(portal, st.down, f"port {port} down for this host")

    async def _listen(self, portal: Portal) -> None:
        try:
            await portal.start()
        except OSError as exc:  # someone took the TCP port meanwhile: say so, once
            log.error("port %d: cannot listen on %s:%d again: %s", portal.info.port, portal.info.host,
                      portal.info.tcp_port, exc)
            self.emit(EventCode.PORT_FAULT, f"port {portal.info.port}: cannot listen again ({exc.strerror or exc})")

    def _alua(self, port: int, down: bool) -> None:
        """The ALUA side (Controller.set_port_alua): a port whose listener is closed is `offline`
        (SPC-4 5.15.2.7: not accessible through the service delivery subsystem) to the hosts on
        the other port, and follows RSO again (`active`) when it is back."""
        if self.alua is None:
            return
        try:
            self.alua(port, "offline" if down else "active")
        except Exception as exc:  # the shelf powered off or a controller refusal: the path fault stands
            log.warning("port %d: ALUA state not changed for the path fault: %s", port, exc)

    def _reset(self, portal: Portal, who: str | set[str] | None, reason: str) -> int:
        hit = [p for p in portal.connections
               if who is None or (initiator_of(p) in who if isinstance(who, set) else initiator_of(p) == who)]
        for proto in hit:
            reset(proto, reason)
        return len(hit)

    # -- FAULT SESSION INITIATOR=iqn REINSTATE | CLEAR ----------------------------------------
    def fault_session(self, initiator: str, action: str) -> dict[str, Any]:
        name = initiator.lower()
        if action == "clear":
            isids = self.retired.pop(name, set())
            self.emit(EventCode.SESSION_FAULT, f"{initiator}: {len(isids)} retired ISIDs may log in again")
            return {"initiator": name, "action": action, "isids": sorted(i.hex() for i in isids)}
        isids = {s.isid for s in self.node.sessions.values() if s.initiator.lower() == name}
        dropped = 0
        for portal in self.portals.values():
            dropped += self._reset(portal, name, "session reinstatement forced (FAULT SESSION REINSTATE)")
        if isids:
            self.retired.setdefault(name, set()).update(isids)
        listed = ", ".join(f"0x{i.hex()}" for i in sorted(isids)) or "none"
        self.emit(EventCode.SESSION_FAULT, f"{initiator}: {dropped} connections dropped; ISIDs retired: {listed}")
        return {"initiator": name, "action": action, "connections_dropped": dropped,
                "isids": sorted(i.hex() for i in self.retired.get(name, ()))}

    # -- SHOW FAULTS ----------------------------------------------------------------------
    def rows(self, port: int | None = None) -> list[dict[str, Any]]:
        out = [f.row() for f in self.faults if port is None or f.port == port]
        if port is None:
            out += [{"port": None, "fault": "reinstate", "initiator": name, "ms": None, "seconds": None,
                     "detail": "ISIDs retired: " + ", ".join(f"0x{i.hex()}" for i in sorted(isids)), "since": None}
                    for name, isids in self.retired.items()]
        return out
