"""Recovery Server Option: heartbeat, acknowledgment, timeout, fencing, forced failover, restore.

A pure state machine on the injected clock. The primary server (port 1) sends heartbeats, the
recovery server's monitor (port 2) acknowledges; the model decides which port reaches the
logical drives (`port_states`) and reports changes through `on_event` and `on_change`, which
the controller wires to its event log, the SCSI target's ALUA gate and NVRAM.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from . import rso_wire
from .clock import Clock
from .events import EventCode
from .scsi.constants import AluaState
from .scsi.types import Nexus

PRIMARY_PORT = 1
RECOVERY_PORT = 2
MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 3600.0
DEFAULT_TIMEOUT_S = 30.0


class RsoState(StrEnum):
    """The product's SNMP RSO status values."""

    OK = "ok"
    NOT_CONFIGURED = "notConfigured"
    DISABLED = "disabled"
    NO_SECONDARY = "noSecondary"
    LINK_DOWN = "linkDown"
    SECONDARY_RUNNING_AUTO = "secondaryRunningAuto"
    SECONDARY_RUNNING_USER = "secondaryRunningUser"
    TIMEOUT_ERROR = "timeoutError"
    DAEMON_DOWN = "daemonDown"


# Wire codes of the states in the vendor commands' status block: defined once, in rso_wire.
STATE_CODES: dict[RsoState, int] = {s: rso_wire.STATE_CODES[s.value] for s in RsoState}


class RsoError(Exception):
    """A refused RSO operation. `kind`: "port" (wrong port), "sequence" (not allowed now)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Rso:
    """The RSO model of one controller."""

    def __init__(
        self,
        clock: Clock,
        *,
        on_event: Callable[[EventCode, str], None] | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_event = on_event
        self.on_change = on_change  # argument: whether persistent settings changed
        # persistent (NVRAM)
        self.configured = False
        self.enabled = False
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.act_alone = False
        self.failed_over: str | None = None  # None, "auto" or "user"
        self.failovers = 0
        # volatile
        self.secondary_joined = False
        self.timed_out = False
        self.last_heartbeat: float | None = None  # as the recovery sees it (relayed)
        self.last_ack: float | None = None
        self.ack_lost = False
        self._service_lost_told = False
        # After power on (or a controller restart) no deadline runs until the primary's first
        # heartbeat: the primary does not resume unattended, so nobody may take over either.
        self.awaiting_primary = False
        self._deadline: float | None = None  # the heartbeat deadline that timed out
        self.last_detection_s: float | None = None  # missed deadline -> fence (automatic failovers)
        self.heartbeats = 0
        self.acks = 0
        self.links: dict[int, bool] = {PRIMARY_PORT: True, RECOVERY_PORT: True}
        self.sessions: dict[int, set[Nexus]] = {PRIMARY_PORT: set(), RECOVERY_PORT: set()}

    # ------------------------------------------------------------ helpers
    def _emit(self, code: EventCode, msg: str) -> None:
        if self.on_event is not None:
            self.on_event(code, msg)

    def _changed(self, persistent: bool) -> None:
        if self.on_change is not None:
            self.on_change(persistent)

    @property
    def active(self) -> bool:
        return self.configured and self.enabled

    def _age(self, t: float | None, now: float) -> float | None:
        return None if t is None else max(0.0, now - t)

    # ------------------------------------------------------------ state
    def state(self) -> RsoState:
        if not self.configured:
            return RsoState.NOT_CONFIGURED
        if not self.enabled:
            return RsoState.DISABLED
        if self.failed_over == "auto":
            return RsoState.SECONDARY_RUNNING_AUTO
        if self.failed_over == "user":
            return RsoState.SECONDARY_RUNNING_USER
        if self.timed_out:
            return RsoState.TIMEOUT_ERROR
        if not all(self.links.values()):
            return RsoState.LINK_DOWN
        if self.awaiting_primary:
            return RsoState.DAEMON_DOWN
        if not self.secondary_joined:
            return RsoState.NO_SECONDARY
        if self.ack_lost:
            return RsoState.DAEMON_DOWN
        return RsoState.OK

    def port_states(self) -> dict[int, int]:
        """ALUA state of each port's logical drive access."""
        if not self.active:
            return {PRIMARY_PORT: AluaState.ACTIVE_OPTIMIZED, RECOVERY_PORT: AluaState.ACTIVE_OPTIMIZED}
        if self.failed_over:
            return {PRIMARY_PORT: AluaState.UNAVAILABLE, RECOVERY_PORT: AluaState.ACTIVE_OPTIMIZED}
        return {PRIMARY_PORT: AluaState.ACTIVE_OPTIMIZED, RECOVERY_PORT: AluaState.STANDBY}

    @property
    def fenced_port(self) -> int | None:
        return PRIMARY_PORT if self.active and self.failed_over else None

    def ack_recent(self, now: float | None = None) -> bool:
        """Whether the recovery acknowledged within the timeout (else the lost-ack alarm)."""
        t = self.clock.now() if now is None else now
        return self.last_ack is not None and t - self.last_ack <= self.timeout_s

    def status(self) -> dict[str, Any]:
        now = self.clock.now()
        hb = self._age(self.last_heartbeat, now)
        ack = self._age(self.last_ack, now)
        return {
            "state": self.state().value,
            "configured": self.configured,
            "enabled": self.enabled,
            "timeout_s": self.timeout_s,
            "act_alone": self.act_alone,
            "secondary_joined": self.secondary_joined,
            "heartbeat_age_s": None if hb is None else round(hb, 3),
            "ack_age_s": None if ack is None else round(ack, 3),
            "ack_recent": self.ack_recent(now),
            "take_over": self.timed_out and not self.failed_over,
            "awaiting_primary": self.awaiting_primary,
            "detection_ms": None if self.last_detection_s is None else round(self.last_detection_s * 1000, 3),
            "failed_over": self.failed_over,
            "fenced_port": self.fenced_port,
            "active_port": RECOVERY_PORT if self.fenced_port else PRIMARY_PORT,
            "links": {str(p): "up" if up else "down" for p, up in self.links.items()},
            "sessions": {str(p): len(s) for p, s in self.sessions.items()},
            "heartbeats": self.heartbeats,
            "acks": self.acks,
            "failovers": self.failovers,
        }

    # ------------------------------------------------------------ configuration
    def configure(self, enabled: bool, timeout_s: float | None = None, act_alone: bool | None = None) -> None:
        """The primary's configuration (port 1 first; the recovery joins by acknowledging)."""
        if timeout_s is not None and not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"heartbeat timeout {timeout_s} s outside {MIN_TIMEOUT_S}..{MAX_TIMEOUT_S}")
        if self.failed_over and not enabled:
            raise RsoError("sequence", "the recovery server runs: restore before disabling RSO")
        was = self.active
        self.configured = True
        self.enabled = bool(enabled)
        if timeout_s is not None:
            self.timeout_s = float(timeout_s)
        if act_alone is not None:
            self.act_alone = bool(act_alone)
        now = self.clock.now()
        if self.enabled and not was:
            # A fresh start: the first deadline counts from now; the recovery must (re)join.
            self.last_heartbeat = now
            self.last_ack = None
            self.secondary_joined = False
            self.timed_out = False
            self.ack_lost = False
        if self.enabled:
            self.awaiting_primary = False  # the primary configures: it is up
        self._emit(EventCode.RSO_CONFIGURED,
                   f"RSO {'enabled' if self.enabled else 'disabled'}: heartbeat timeout {self.timeout_s:g} s"
                   f"{', the controller fails over by itself' if self.act_alone else ''}")
        self._changed(True)

    # ------------------------------------------------------------ commands
    def heartbeat(self, port: int) -> None:
        if port != PRIMARY_PORT:
            raise RsoError("port", f"heartbeat from port {port}: only the primary on port 1 sends it")
        if not self.active:
            raise RsoError("sequence", "heartbeat while RSO is not enabled")
        self.advance(self.clock.now())  # a deadline that passed counts before this heartbeat
        if self.failed_over or not self.links[PRIMARY_PORT]:
            return  # a fenced (or cut off) primary's heartbeat reaches nobody
        self.heartbeats += 1
        if self.awaiting_primary:
            self.awaiting_primary = False
            self.last_heartbeat = self.clock.now()
            self._emit(EventCode.RSO_PRIMARY_STARTED,
                       "the primary's heartbeat started: the heartbeat deadline runs again")
            self._changed(False)
        if self.links[RECOVERY_PORT]:
            self.last_heartbeat = self.clock.now()
            if self.timed_out:
                self.timed_out = False
                self._service_lost_told = False
                self._emit(EventCode.RSO_HEARTBEAT_RESUMED, "the primary's heartbeat resumed before failover")
                self._changed(False)

    def acknowledge(self, port: int) -> None:
        if port != RECOVERY_PORT:
            raise RsoError("port", f"acknowledge from port {port}: only the recovery on port 2 sends it")
        if not self.active:
            raise RsoError("sequence", "acknowledge before RSO is configured and enabled on the primary")
        if not self.links[RECOVERY_PORT]:
            return
        self.advance(self.clock.now())  # so an answer never hides a deadline that passed
        self.acks += 1
        self.last_ack = self.clock.now()
        changed = False
        if not self.secondary_joined:
            self.secondary_joined = True
            changed = True
            self._emit(EventCode.RSO_SECONDARY_JOINED, "the recovery server acknowledges heartbeats")
        if self.ack_lost:
            self.ack_lost = False
            changed = True
            self._emit(EventCode.RSO_ACK_RESTORED, "the recovery server's acknowledgment is back")
        if changed:
            self._changed(False)

    def failover(self, port: int | None = None) -> bool:
        """Fence port 1, activate port 2. From port 2 (F8) or management (None).

        After a heartbeat timeout it counts as automatic; otherwise as forced by the user.
        Returns False when already failed over.
        """
        if port is not None and port != RECOVERY_PORT:
            raise RsoError("port", f"failover from port {port}: only the recovery on port 2 may fence")
        if not self.active:
            raise RsoError("sequence", "failover while RSO is not enabled")
        if self.failed_over:
            return False
        self._fence("auto" if self.timed_out else "user")
        return True

    def _fence(self, how: str) -> None:
        now = self.clock.now()
        if how == "auto" and self._deadline is not None:
            self.last_detection_s = max(0.0, now - self._deadline)
        self.failed_over = how
        self.failovers += 1
        self.timed_out = False
        self._service_lost_told = False
        why = "after the heartbeat timeout" if how == "auto" else "forced (F8)"
        self._emit(EventCode.RSO_FAILOVER,
                   f"failover {why}: port 1 fenced from every logical drive, the recovery server on port 2 active")
        self._changed(True)

    def restore(self) -> None:
        """Manual restore: only once the recovery host has logged out of port 2."""
        if not self.failed_over:
            raise RsoError("sequence", "nothing to restore: no failover happened")
        if self.sessions[RECOVERY_PORT]:
            raise RsoError("sequence",
                           f"the recovery server is still logged in on port 2 "
                           f"({len(self.sessions[RECOVERY_PORT])} sessions): shut it down first")
        self.failed_over = None
        self.timed_out = False
        self.secondary_joined = False
        self.ack_lost = False
        self.last_ack = None
        self.last_heartbeat = self.clock.now()
        self.awaiting_primary = True  # the deadline runs from the restored primary's first heartbeat
        self._emit(EventCode.RSO_RESTORED, "RSO restored: port 1 active, the recovery server listens again")
        self._changed(True)

    # ------------------------------------------------------------ faults and sessions
    def link(self, port: int, up: bool) -> None:
        """Break or mend the heartbeat path of a port (port 2 down: heartbeats no longer reach the recovery)."""
        if port not in self.links:
            raise ValueError(f"port {port}: ports are 1 and 2")
        if self.links[port] == up:
            return
        self.links[port] = up
        if up and self.active and not self.failed_over:
            # The deadline counts again from the moment the path works.
            self.last_heartbeat = self.clock.now() if port == RECOVERY_PORT else self.last_heartbeat
        self._emit(EventCode.RSO_LINK, f"port {port} link {'up' if up else 'down'}")
        self._changed(False)

    def nexus_seen(self, nexus: Nexus) -> None:
        if nexus.port in self.sessions:
            self.sessions[nexus.port].add(nexus)

    def nexus_loss(self, nexus: Nexus) -> None:
        if nexus.port in self.sessions:
            self.sessions[nexus.port].discard(nexus)

    # ------------------------------------------------------------ clock
    def next_deadline(self) -> float | None:
        if not self.active or self.failed_over:
            return None
        due: list[float] = []
        if not self.timed_out and not self.awaiting_primary and self.last_heartbeat is not None:
            due.append(self.last_heartbeat + self.timeout_s)
        if self.secondary_joined and not self.ack_lost and self.last_ack is not None:
            due.append(self.last_ack + self.timeout_s)
        return min(due) if due else None

    def advance(self, now: float) -> None:
        if not self.active or self.failed_over:
            return
        if (not self.timed_out and not self.awaiting_primary and self.last_heartbeat is not None
                and now >= self.last_heartbeat + self.timeout_s):
            self.timed_out = True
            self._deadline = self.last_heartbeat + self.timeout_s
            self._emit(EventCode.RSO_TIMEOUT,
                       f"no heartbeat from the primary for {self.timeout_s:g} s")
            if self.act_alone:
                self._fence("auto")
                return
            self._changed(False)
        if (self.secondary_joined and not self.ack_lost and self.last_ack is not None
                and now >= self.last_ack + self.timeout_s):
            self.ack_lost = True
            self._emit(EventCode.RSO_ACK_LOST,
                       "the primary no longer receives the recovery server's acknowledgment: "
                       "the recovery server malfunctioned or is off")
            self._changed(False)
        if self.timed_out and not self._service_lost_told and (self.ack_lost or not self.secondary_joined):
            self._service_lost_told = True
            self._emit(EventCode.RSO_SERVICE_LOST,
                       "the primary failed and no recovery server acknowledges: clients lose service")

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "enabled": self.enabled,
            "timeout_s": self.timeout_s,
            "act_alone": self.act_alone,
            "failed_over": self.failed_over,
            "failovers": self.failovers,
        }

    def load(self, raw: dict[str, Any] | None) -> None:
        """Settings and the fence from NVRAM; timers start afresh (the deadline counts from now)."""
        if not raw:
            return
        self.configured = bool(raw.get("configured", False))
        self.enabled = bool(raw.get("enabled", False))
        self.timeout_s = float(raw.get("timeout_s", DEFAULT_TIMEOUT_S))
        self.act_alone = bool(raw.get("act_alone", False))
        fo = raw.get("failed_over")
        self.failed_over = fo if fo in ("auto", "user") else None
        self.failovers = int(raw.get("failovers", 0))
        self.restart()

    def restart(self) -> None:
        """After power on or reopen: deadlines count from now; the recovery must acknowledge again."""
        self.last_heartbeat = self.clock.now() if self.active else None
        self.last_ack = None
        self.secondary_joined = False
        self.timed_out = False
        self.ack_lost = False
        self._service_lost_told = False
        self.awaiting_primary = self.active and not self.failed_over
        for s in self.sessions.values():
            s.clear()

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, clock: Clock, **kw: Any) -> Rso:
        rso = cls(clock, **kw)
        rso.load(raw)
        return rso
