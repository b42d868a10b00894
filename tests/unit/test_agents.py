"""The RSO host agents on the virtual clock, against an in-process controller.

The agents' real code (pyscsi commands, alarms, exit rules) runs; only the device backend is a
direct call into the firmware model, and time is the controller's virtual clock, so every row of
the failure table is deterministic and takes milliseconds. The same scenarios run over iSCSI
with the agents as subprocesses in tests/integration/test_rso_agents.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_model.controller import Controller
from firmware_model.rso import RsoState
from firmware_model.scsi.types import DataDirection, Nexus, ScsiRequest, Status
from msa500_emu.agents.agent import (
    EXIT_BOOT,
    EXIT_FENCED,
    EXIT_POWER_HOLD,
    EXIT_USAGE,
    AgentExit,
    PrimaryAgent,
    RecoveryAgent,
    _Agent,
)
from msa500_emu.agents.scsi import CheckCondition, DeviceLost, RsoClient, StatusError, _Device
from msa500_emu.alerts import Alerts
from tests.unit.shelf_helpers import Clocked, codes, sense

TIMEOUT = 5.0
_isid = iter(range(1, 1 << 20))


class LocalDevice(_Device):
    """A device backend that calls the firmware directly (one I_T nexus per connection)."""

    def __init__(self, sim: Sim, port: int, name: str) -> None:
        super().__init__()
        if not sim.reachable[port]:
            raise DeviceLost(f"port {port} unreachable")
        self.sim = sim
        self.port = port
        self.nexus = Nexus(f"iqn.2026-11.test:{name},i,0x{next(_isid):06x}", port)
        sim.sessions.append(self)

    def run(self, cdb: bytes, data_out: bytes, read_len: int) -> bytes:
        if not self.sim.reachable[self.port] or self.sim.ctl is None:
            raise DeviceLost("connection reset")
        res = self.sim.ctl.target.execute(ScsiRequest(
            self.nexus, 0, cdb, data_out, len(data_out) or read_len,
            DataDirection.WRITE if data_out else DataDirection.READ if read_len else DataDirection.NONE))
        if res.status == Status.CHECK_CONDITION:
            raise CheckCondition(res.sense)
        if res.status != Status.GOOD:
            raise StatusError(f"status {res.status}")
        return bytes(res.data)[:read_len]

    def close(self) -> None:
        if self.sim.ctl is not None:
            self.sim.ctl.target.nexus_loss(self.nexus)


class Sim:
    """Agents and the controller's timers on one virtual clock, in deadline order."""

    def __init__(self, env: Clocked, ctl: Controller) -> None:
        self.env = env
        self.ctl: Controller | None = ctl
        self.reachable = {1: True, 2: True}
        self.sessions: list[LocalDevice] = []
        self.agents: dict[str, tuple[_Agent, float]] = {}
        self.exits: dict[str, tuple[int, float]] = {}

    def connector(self, port: int, name: str) -> Callable[[], RsoClient]:
        return lambda: RsoClient(LocalDevice(self, port, name))

    def primary(self, interval: float | None = None, configure: tuple[float, bool] | None = None) -> PrimaryAgent:
        agent = PrimaryAgent(self.connector(1, "primary"), Alerts("primary"), interval, configure)
        self.agents["primary"] = (agent, self.now)
        return agent

    def recovery(self, interval: float | None = None, force: bool = False) -> RecoveryAgent:
        agent = RecoveryAgent(self.connector(2, "recovery"), Alerts("recovery"), interval, force=force)
        self.agents["recovery"] = (agent, self.now)
        return agent

    def kill(self, name: str) -> None:
        """The host dies: its agent stops and (eventually) its sessions are gone."""
        agent, _ = self.agents.pop(name)
        agent.close()

    @property
    def now(self) -> float:
        return self.env.clock.now()

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            wakes = [(t, n) for n, (_, t) in self.agents.items()]
            due = self.ctl.next_deadline() if self.ctl is not None else None
            t = min([end] + [w for w, _ in wakes] + ([due] if due is not None else []))
            if t > self.now:
                self.env.clock.advance(t - self.now)
            if self.ctl is not None:
                self.ctl.advance(self.now)
            ready = sorted(n for w, n in wakes if w <= self.now)
            if not ready and self.now >= end:
                return
            for name in ready:
                agent, _ = self.agents[name]
                try:
                    self.agents[name] = (agent, agent.step(self.now))
                except AgentExit as done:
                    del self.agents[name]
                    agent.close()
                    self.exits[name] = (done.code, self.now)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


@pytest.fixture
def sim(env: Clocked, tmp_path: Path) -> Sim:
    return Sim(env, env.open(tmp_path))


def state(sim: Sim) -> str:
    assert sim.ctl is not None
    return str(sim.ctl.rso_status()["state"])


def alert_codes(agent: _Agent) -> list[str]:
    return [a.code for a in agent.alerts.sent]


def running(sim: Sim) -> tuple[PrimaryAgent, RecoveryAgent]:
    """The product's order: the primary configures RSO and heartbeats, then the recovery joins."""
    p = sim.primary(configure=(TIMEOUT, False))
    sim.run(0.5)
    r = sim.recovery()
    sim.run(3)
    assert state(sim) == RsoState.OK
    return p, r


def lun1(sim: Sim, port: int, write: bool = False) -> tuple[int, int, int] | None:
    """A host's media access through a port: None if GOOD, else the sense triple."""
    assert sim.ctl is not None
    nexus = Nexus(f"iqn.2026-11.test:host{port},i,0x00abcd", port)
    cdb = struct.pack(">BBIBHB", 0x2A if write else 0x28, 0, 0, 0, 1, 0)
    for _ in range(8):
        res = sim.ctl.target.execute(ScsiRequest(nexus, 1, cdb, b"\x5a" * 512 if write else b"", 512))
        if res.status == Status.CHECK_CONDITION and sense(res)[0] == 0x6:
            continue
        return None if res.status == Status.GOOD else sense(res)
    raise AssertionError("unit attentions never stop")


# ------------------------------------------------------------------ failure table
def test_primary_fails_recovery_fences_and_boots(sim: Sim) -> None:
    _p, r = running(sim)
    assert lun1(sim, 2) == (0x2, 0x04, 0x0B)  # standby before
    sim.kill("primary")
    t_dead = sim.now
    sim.run(10)
    code, t_exit = sim.exits["recovery"]
    assert code == EXIT_BOOT
    assert state(sim) == RsoState.SECONDARY_RUNNING_AUTO
    assert t_exit - t_dead <= TIMEOUT + 0.01  # deadline counts from the last heartbeat
    assert sim.ctl is not None and sim.ctl.rso_status()["detection_ms"] <= 2 + 1  # woke just past the deadline
    assert "HOST_FAILOVER" in alert_codes(r)
    assert lun1(sim, 1, write=True) == (0x2, 0x04, 0x0C) and lun1(sim, 2, write=True) is None
    assert "HOST_FAILOVER" in codes(sim.ctl)  # the recovery's alarm is in the array's log too


def test_recovery_fails_while_primary_serves_alarm_from_the_primary(sim: Sim) -> None:
    p, _r = running(sim)
    sim.kill("recovery")
    sim.run(TIMEOUT + 2)
    assert "HOST_ACK_LOST" in alert_codes(p)
    assert "primary" in sim.agents and "RSO_ACK_LOST" in codes(sim.ctl)  # type: ignore[arg-type]
    assert lun1(sim, 1, write=True) is None  # the primary keeps serving
    r2 = sim.recovery()
    sim.run(2)
    assert "HOST_ACK_RESTORED" in alert_codes(p) and state(sim) == RsoState.OK
    assert "recovery" in sim.agents and r2.joined


def test_recovery_fails_while_primary_offline_clients_lose_service(sim: Sim) -> None:
    running(sim)
    sim.kill("recovery")
    sim.run(1)
    sim.kill("primary")
    sim.run(30)
    assert state(sim) == RsoState.TIMEOUT_ERROR
    assert "RSO_SERVICE_LOST" in codes(sim.ctl)  # type: ignore[arg-type]
    assert lun1(sim, 2) == (0x2, 0x04, 0x0B)  # the primary is dead and nobody took over
    assert sim.ctl is not None and sim.ctl.rso_status()["failovers"] == 0


def test_storage_fails_both_lose_it_and_the_primary_waits_for_an_administrator(sim: Sim, env: Clocked,
                                                                               tmp_path: Path) -> None:
    p, r = running(sim)
    assert sim.ctl is not None
    sim.ctl.power_off()
    sim.reachable = {1: False, 2: False}
    sim.run(20)
    assert "HOST_ARRAY_LOST" in alert_codes(p) and "HOST_ARRAY_LOST" in alert_codes(r)
    assert not sim.exits  # both agents keep trying
    sim.ctl.power_on()
    sim.reachable = {1: True, 2: True}
    sim.run(120)
    assert sim.exits["primary"][0] == EXIT_POWER_HOLD
    assert "HOST_POWER_LOSS_HOLD" in alert_codes(p) and "HOST_ARRAY_BACK" in alert_codes(r)
    assert "recovery" in sim.agents  # still acknowledging, but nobody takes over
    assert state(sim) == RsoState.DAEMON_DOWN and sim.ctl.rso_status()["failovers"] == 0
    # The administrator starts a normal boot of the primary.
    sim.primary()
    sim.run(3)
    assert state(sim) == RsoState.OK and lun1(sim, 1) is None


def test_blind_spot_dead_nic_but_heartbeat_runs_no_failover(sim: Sim) -> None:
    running(sim)
    sim.run(600)  # clients cannot reach the primary (its NIC died); its heartbeat still runs
    assert state(sim) == RsoState.OK and set(sim.agents) == {"primary", "recovery"}
    assert sim.ctl is not None and sim.ctl.rso_status()["failovers"] == 0


def test_broken_port2_link_fails_over_although_the_primary_heartbeats(sim: Sim) -> None:
    p, _r = running(sim)
    assert sim.ctl is not None
    sim.ctl.fault_link(2, "down")
    sim.run(TIMEOUT + 1)
    assert sim.exits["recovery"][0] == EXIT_BOOT
    sim.run(2)
    assert sim.exits["primary"][0] == EXIT_FENCED and "HOST_FENCED" in alert_codes(p)


def test_array_network_outage_shorter_than_the_timeout_changes_nothing(sim: Sim) -> None:
    p, r = running(sim)
    sim.reachable = {1: False, 2: False}
    sim.run(TIMEOUT / 2)
    sim.reachable = {1: True, 2: True}
    sim.run(20)
    assert not sim.exits and state(sim) == RsoState.OK
    assert alert_codes(p).count("HOST_ARRAY_BACK") == 1 and alert_codes(r).count("HOST_ARRAY_BACK") == 1


def test_primary_cut_off_longer_than_the_timeout_is_failed_over_and_stops_when_back(sim: Sim) -> None:
    _p, _r = running(sim)
    sim.reachable[1] = False
    sim.run(TIMEOUT + 1)
    assert sim.exits["recovery"][0] == EXIT_BOOT
    sim.reachable[1] = True
    sim.run(2)
    assert sim.exits["primary"][0] == EXIT_FENCED


# ------------------------------------------------------------------ forced failover, restore
def test_forced_failover_f8_then_manual_restore_round_trip(sim: Sim) -> None:
    _p, _r = running(sim)
    sim.kill("recovery")
    f8 = sim.recovery(force=True)
    sim.run(0.01)
    assert sim.exits["recovery"][0] == EXIT_BOOT and "HOST_FAILOVER" in alert_codes(f8)
    assert state(sim) == RsoState.SECONDARY_RUNNING_USER
    sim.run(2)
    assert sim.exits["primary"][0] == EXIT_FENCED
    assert sim.ctl is not None
    # The recovery host now serves; restore is refused while it is logged in on port 2.
    serving = LocalDevice(sim, 2, "recovery-os")
    assert RsoClient(serving, check_type=False).status().active_port == 2
    with pytest.raises(Exception, match="port 2"):
        sim.ctl.rso_restore()
    serving.close()
    sim.ctl.rso_restore()
    p2 = sim.primary()
    sim.run(1)
    sim.recovery()
    sim.run(3)
    assert state(sim) == RsoState.OK and p2.heartbeats > 0
    assert lun1(sim, 1, write=True) is None and lun1(sim, 2) == (0x2, 0x04, 0x0B)


def test_restored_primary_that_is_slow_to_boot_is_not_failed_over(sim: Sim) -> None:
    running(sim)
    sim.kill("recovery")
    sim.recovery(force=True)
    sim.run(3)
    assert sim.ctl is not None
    sim.ctl.rso_restore()
    sim.recovery()  # the recovery returns to listening before the primary finished booting
    sim.run(TIMEOUT * 4)
    assert "recovery" in sim.agents and sim.ctl.rso_status()["awaiting_primary"]
    sim.primary()
    sim.run(2)
    assert state(sim) == RsoState.OK


def test_act_alone_without_a_recovery_agent(sim: Sim) -> None:
    sim.primary(configure=(TIMEOUT, True))
    sim.run(3)
    assert state(sim) == RsoState.NO_SECONDARY
    sim.kill("primary")
    sim.run(TIMEOUT)
    assert state(sim) == RsoState.SECONDARY_RUNNING_AUTO
    assert sim.ctl is not None and sim.ctl.rso_status()["detection_ms"] == 0


def test_agents_wait_politely_for_configuration_and_refuse_the_wrong_port(sim: Sim) -> None:
    r = sim.recovery(interval=1.0)
    sim.run(5)
    assert "recovery" in sim.agents and not r.joined  # RSO not configured yet: it waits
    wrong = PrimaryAgent(sim.connector(2, "confused"), Alerts("x"), 1.0, (TIMEOUT, False))
    sim.agents["confused"] = (wrong, sim.now)
    sim.run(1)
    assert sim.exits["confused"][0] == EXIT_USAGE
    sim.primary(configure=(TIMEOUT, False))
    sim.run(3)
    assert r.joined and state(sim) == RsoState.OK


def test_sg_io_header_matches_the_kernel_layout() -> None:
    """struct sg_io_hdr is 88 bytes on x86_64 (64 on 32-bit); the guest's agents use it for real."""
    import ctypes

    from msa500_emu.agents.scsi import SgIoHdr

    assert ctypes.sizeof(SgIoHdr) == (88 if ctypes.sizeof(ctypes.c_void_p) == 8 else 64)
    assert SgIoHdr.status.offset == (64 if ctypes.sizeof(ctypes.c_void_p) == 8 else 44)


def test_device_that_is_not_the_array_controller_is_refused(sim: Sim) -> None:
    class Lun1(LocalDevice):
        def run(self, cdb: bytes, data_out: bytes, read_len: int) -> bytes:
            data = super().run(cdb, data_out, read_len)
            return bytes([0x00]) + data[1:] if cdb[0] == 0x12 else data  # INQUIRY says: a disk

    with pytest.raises(ValueError, match="LUN 0"):
        RsoClient(Lun1(sim, 1, "wrong"))
