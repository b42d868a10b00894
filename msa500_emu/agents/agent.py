"""The two RSO agents as step machines: `step(now)` does one round of I/O and returns when to
be called next, or raises `AgentExit`. `run()` drives one with real time; tests drive both on
a virtual clock against an in-process controller (deterministic, no sockets)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..alerts import CRITICAL, INFO, WARNING, Alerts
from .scsi import CheckCondition, DeviceLost, RsoClient, StatusBlock, StatusError

log = logging.getLogger("msa500_emu.agents")

# Exit codes (documented in docs/rso-agents.md)
EXIT_BOOT = 0  # recovery: the primary is fenced, boot the recovery host now
EXIT_USAGE = 2  # wrong device / wrong port / bad arguments
EXIT_FENCED = 3  # primary: this host was fenced; it no longer owns the logical drives
EXIT_GAVE_UP = 4  # recovery: --max-wait passed without a failover
EXIT_POWER_HOLD = 5  # primary: the storage lost power; an administrator must start a normal boot

RETRY_S = 0.5  # reconnect period while the array is unreachable
EPSILON_S = 0.002  # look just past a projected heartbeat deadline


class AgentExit(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Agent:
    role = "agent"

    def __init__(self, connect: Callable[[], RsoClient], alerts: Alerts, interval: float | None = None) -> None:
        self.connect = connect
        self.alerts = alerts
        self.interval = interval
        self.client: RsoClient | None = None
        self.lost_told = False
        self.contacts = 0
        self.timeout_s: float | None = None
        self._told: set[str] = set()

    def step(self, now: float) -> float:  # pragma: no cover - each role defines it
        raise NotImplementedError

    def period(self) -> float:
        if self.interval is not None:
            return self.interval
        if self.timeout_s:  # several rounds per timeout, never slower than 1 s
            return min(1.0, max(0.05, self.timeout_s / 5))
        return 1.0

    def alert(self, code: str, severity: str, message: str, to_array: bool = True) -> None:
        """Raise an alert locally and write it into the array's event log (both servers share it)."""
        self.alerts.raise_(code, severity, message)
        if to_array and self.client is not None:
            try:
                self.client.log_event(code, message)
            except (CheckCondition, DeviceLost, StatusError, OSError) as exc:
                log.debug("could not log %s on the array: %s", code, exc)

    def once(self, key: str, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", message)

    def _ensure(self) -> bool:
        """Connected? Raises AgentExit for a device that can never work."""
        if self.client is not None:
            return False
        try:
            self.client = self.connect()
        except DeviceLost as exc:
            if not self.lost_told:
                self.lost_told = True
                self.alert("HOST_ARRAY_LOST", WARNING, f"the array is unreachable: {exc}", to_array=False)
            raise
        except ValueError as exc:
            raise AgentExit(EXIT_USAGE, str(exc)) from None
        self.contacts += 1
        if self.lost_told:
            self.lost_told = False
            self.alert("HOST_ARRAY_BACK", INFO, "the array answers again")
        elif self.contacts == 1:
            self.alert("HOST_AGENT_STARTED", INFO, f"RSO {self.role} agent started")
        return True

    def _lost(self, exc: Exception) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        if not self.lost_told:
            self.lost_told = True
            self.alert("HOST_ARRAY_LOST", WARNING, f"lost contact with the array: {exc}", to_array=False)

    def _learn(self, blk: StatusBlock) -> None:
        if blk.timeout_ms:
            self.timeout_s = blk.timeout_ms / 1000

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class PrimaryAgent(_Agent):
    """Heartbeats from port 1; raises the lost-acknowledgment alarm; stops when fenced."""

    role = "primary"

    def __init__(self, connect: Callable[[], RsoClient], alerts: Alerts, interval: float | None = None,
                 configure: tuple[float, bool] | None = None) -> None:
        super().__init__(connect, alerts, interval)
        self.configure = configure  # (timeout_s, act_alone): enable RSO first, as the product's order
        self.heartbeats = 0
        self.first_beat: float | None = None
        self.ack_alarm = False
        self.last: StatusBlock | None = None

    def step(self, now: float) -> float:
        try:
            fresh = self._ensure()
        except DeviceLost:
            return now + min(RETRY_S, self.period())
        assert self.client is not None
        try:
            if self.configure is not None:
                timeout_s, act_alone = self.configure
                self.client.configure(True, timeout_s, act_alone)
                self.configure = None
                log.info("RSO enabled on the array: heartbeat timeout %g s%s", timeout_s,
                         ", the controller fails over by itself" if act_alone else "")
            if fresh and self.heartbeats:
                # Back after an outage: was it a storage power loss? Then the primary does not
                # resume unattended (RSO.md); an administrator starts a normal boot.
                st = self.client.status()
                if st.awaiting_primary:
                    self.alert("HOST_POWER_LOSS_HOLD", CRITICAL,
                               "the storage lost power: the primary does not resume unattended; "
                               "an administrator must start a normal boot (restart this agent)")
                    raise AgentExit(EXIT_POWER_HOLD, "storage power loss: waiting for an administrator")
            blk = self.client.heartbeat()
        except CheckCondition as cc:
            if cc.wrong_port:
                raise AgentExit(EXIT_USAGE, "the array refuses HEARTBEAT here: the primary agent must use "
                                            "port 1") from None
            if cc.sequence_error:
                self.once("not-enabled", "RSO is not enabled on the array: waiting (enable it with "
                                         "--configure TIMEOUT or `msa500-emu ctl RSO ENABLE TIMEOUT=...`)")
                return now + self.period()
            raise
        except (DeviceLost, StatusError) as exc:
            self._lost(exc)
            return now + min(RETRY_S, self.period())
        self.last = blk
        self._learn(blk)
        self.heartbeats += 1
        if self.first_beat is None:
            self.first_beat = now
            log.info("heartbeating every %.3g s (timeout %g s)", self.period(), self.timeout_s or 0)
        if blk.fenced_primary:
            self.alert("HOST_FENCED", CRITICAL,
                       f"this primary is fenced (state {blk.state}): the recovery server owns the logical "
                       f"drives; stop and wait for a manual restore")
            raise AgentExit(EXIT_FENCED, "fenced")
        grace = self.timeout_s or 0.0
        if not blk.ack_recent and now - self.first_beat >= grace:
            if not self.ack_alarm:
                self.ack_alarm = True
                self.alert("HOST_ACK_LOST", WARNING,
                           "the primary no longer receives the recovery server's acknowledgment: the recovery "
                           "server failed or is powered off")
        elif blk.ack_recent and self.ack_alarm:
            self.ack_alarm = False
            self.alert("HOST_ACK_RESTORED", INFO, "the recovery server acknowledges again")
        return now + self.period()


class RecoveryAgent(_Agent):
    """The pre-boot monitor on port 2: acknowledges, watches, fences on timeout or F8, then exits 0."""

    role = "recovery"

    def __init__(self, connect: Callable[[], RsoClient], alerts: Alerts, interval: float | None = None,
                 force: bool = False, max_wait: float | None = None, start: float | None = None) -> None:
        super().__init__(connect, alerts, interval)
        self.force = force
        self.max_wait = max_wait
        self.start = start
        self.joined = False
        self.last: StatusBlock | None = None

    def _failover(self, why: str) -> None:
        assert self.client is not None
        self.client.force_failover()
        st = self.client.status()
        if not st.fenced_primary:
            raise AgentExit(1, f"FORCE FAILOVER answered GOOD but the primary is not fenced (state {st.state})")
        self.alert("HOST_FAILOVER", CRITICAL, f"{why}: the primary is fenced from every logical drive; "
                                              f"the recovery server boots")
        raise AgentExit(EXIT_BOOT, why)

    def step(self, now: float) -> float:
        if self.start is None:
            self.start = now
        if self.max_wait is not None and now - self.start >= self.max_wait:
            raise AgentExit(EXIT_GAVE_UP, f"no failover within {self.max_wait:g} s")
        try:
            self._ensure()
        except DeviceLost:
            return now + min(RETRY_S, self.period())
        assert self.client is not None
        try:
            if self.force:
                self._failover("forced failover (F8)")
            blk = self.client.acknowledge()
            self.last = blk
            self._learn(blk)
            if blk.failed_over:
                self.alert("HOST_FAILOVER", CRITICAL,
                           f"failover already done (state {blk.state}): the recovery server boots")
                raise AgentExit(EXIT_BOOT, "failed over")
            if blk.take_over:
                age = "never" if blk.heartbeat_age_ms is None else f"{blk.heartbeat_age_ms / 1000:.3f} s ago"
                self._failover(f"the primary failed: last heartbeat {age}, timeout {blk.timeout_ms / 1000:g} s")
        except CheckCondition as cc:
            if cc.wrong_port:
                raise AgentExit(EXIT_USAGE, "the array refuses ACKNOWLEDGE here: the recovery agent must use "
                                            "port 2") from None
            if cc.sequence_error:
                self.once("not-enabled", "RSO is not configured on the primary yet: waiting")
                return now + self.period()
            raise
        except (DeviceLost, StatusError) as exc:
            self._lost(exc)
            return now + min(RETRY_S, self.period())
        if not self.joined:
            self.joined = True
            log.info("acknowledging; watching the primary's heartbeat (timeout %g s)", self.timeout_s or 0)
        wake = now + self.period()
        if blk.heartbeat_age_ms is not None and not blk.awaiting_primary:
            # Ask again just after the heartbeat deadline as the array sees it: detection does not
            # wait for the next polling round.
            remaining = max(0.0, (blk.timeout_ms - blk.heartbeat_age_ms) / 1000)
            wake = min(wake, now + remaining + EPSILON_S)
        return wake


def run(agent: _Agent, clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Drive an agent in real time until it exits; returns the exit code."""
    try:
        while True:
            try:
                wake = agent.step(clock())
            except AgentExit as done:
                log.log(logging.INFO if done.code == 0 else logging.WARNING, "exit %d: %s", done.code, done.reason)
                return done.code
            delay = wake - clock()
            if delay > 0:
                sleep(delay)
    finally:
        agent.close()
