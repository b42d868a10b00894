"""Recovery Server Option on the virtual clock: heartbeats, fencing by port, failover, restore, alarms."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from firmware_model.controller import Controller, ControllerError
from firmware_model.rso import STATE_CODES, RsoState
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from tests.unit.shelf_helpers import Clocked, codes, pattern, sense

P1 = Nexus("iqn.2026-01.test:primary,i,0x000001", 1)
P2 = Nexus("iqn.2026-01.test:recovery,i,0x000002", 2)
TIMEOUT_MS = 5000

HEARTBEAT = bytes((0xC0, 0, 0, 0, 0, 0, 0, 0, 16, 0))
ACKNOWLEDGE = bytes((0xC1, 0, 0, 0, 0, 0, 0, 0, 16, 0))
STATUS = bytes((0xC2, 0, 0, 0, 0, 0, 0, 0, 32, 0))
FAILOVER = bytes((0xC3,)) + bytes(9)
CONFIGURE = bytes((0xC4, 0, 0, 0, 0, 0, 0, 0, 8, 0))
RTPG = struct.pack(">BBIIBB", 0xA3, 0x0A, 0, 1024, 0, 0)
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
REPORT_LUNS = struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, 256, 0, 0)
TUR = bytes(6)

STANDBY = (0x2, 0x04, 0x0B)
UNAVAILABLE = (0x2, 0x04, 0x0C)
WRONG_PORT = (0x5, 0x80, 0x01)
SEQUENCE = (0x5, 0x2C, 0x00)
AA_CHANGED = (0x6, 0x2A, 0x06)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


@pytest.fixture
def c(env: Clocked, tmp_path: Path) -> Controller:
    ctl = env.open(tmp_path)
    login(ctl, P1)
    login(ctl, P2)
    return ctl


def cmd(c: Controller, nexus: Nexus, lun: int, cdb: bytes, data: bytes = b"") -> ScsiResult:
    return c.target.execute(ScsiRequest(nexus, lun, cdb, data, len(data)))


def login(c: Controller, nexus: Nexus) -> None:
    """A session logs in and takes its power-on unit attentions."""
    cmd(c, nexus, 0, INQUIRY)
    for lun in c.target.lun_list():
        while c.target.pop_unit_attention(nexus, lun) is not None:
            pass


def configure(c: Controller, enable: bool = True, act_alone: bool = False, timeout_ms: int = TIMEOUT_MS,
              nexus: Nexus = P1) -> ScsiResult:
    flags = (1 if enable else 0) | (2 if act_alone else 0)
    return cmd(c, nexus, 0, CONFIGURE, bytes((flags, 0, 0, 0)) + struct.pack(">I", timeout_ms))


def write(c: Controller, nexus: Nexus, lba: int, data: bytes, lun: int = 1) -> ScsiResult:
    return cmd(c, nexus, lun, struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0), data)


def read(c: Controller, nexus: Nexus, lba: int, blocks: int, lun: int = 1) -> ScsiResult:
    return cmd(c, nexus, lun, struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0))


def block(res: ScsiResult) -> dict[str, int]:
    d = bytes(res.data)
    state, flags, active, fenced, hb, ack, timeout = struct.unpack(">BBBBIII", d[:16])
    return {"state": state, "flags": flags, "active": active, "fenced": fenced, "hb_ms": hb,
            "ack_ms": ack, "timeout_ms": timeout}


def groups(c: Controller, nexus: Nexus, lun: int = 1) -> dict[int, int]:
    res = cmd(c, nexus, lun, RTPG)
    assert res.status == Status.GOOD, sense(res)
    d = bytes(res.data)
    n = struct.unpack(">I", d[:4])[0]
    out = {}
    off = 4
    while off < 4 + n:
        gid = struct.unpack(">H", d[off + 2 : off + 4])[0]
        count = d[off + 7]
        ports = [struct.unpack(">H", d[off + 8 + 4 * i + 2 : off + 12 + 4 * i])[0] for i in range(count)]
        assert ports == [gid]
        out[gid] = d[off] & 0x0F
        off += 8 + 4 * count
    return out


def step(c: Controller, env: Clocked, seconds: float, *, hb: bool = True, ack: bool = True,
         every: float = 1.0) -> list[ScsiResult]:
    """Let `seconds` pass; each `every` seconds the primary heartbeats and the recovery acknowledges."""
    acks: list[ScsiResult] = []
    t_end = env.clock.now() + seconds
    while env.clock.now() < t_end - 1e-9:
        env.clock.advance(min(every, t_end - env.clock.now()))
        c.advance(env.clock.now())
        if hb:
            assert cmd(c, P1, 0, HEARTBEAT).status == Status.GOOD
        if ack:
            res = cmd(c, P2, 0, ACKNOWLEDGE)
            assert res.status == Status.GOOD
            acks.append(res)
    return acks


def changed(c: Controller, *nexuses: Nexus) -> None:
    """Every nexus, on either port, has ASYMMETRIC ACCESS STATE CHANGED on every logical drive: taken."""
    for nexus in nexuses:
        for lun in c.target.lun_list():
            if lun:
                assert sense(cmd(c, nexus, lun, TUR)) == AA_CHANGED, (nexus, lun)


def state(c: Controller) -> str:
    return str(c.rso_status()["state"])


def running(c: Controller, env: Clocked) -> None:
    """RSO configured, the recovery joined, a few normal heartbeats."""
    assert configure(c).status == Status.GOOD
    changed(c, P1, P2)
    step(c, env, 3)
    assert state(c) == RsoState.OK


# ------------------------------------------------------------------ access by port
def test_without_rso_both_ports_reach_the_drives(c: Controller) -> None:
    assert state(c) == RsoState.NOT_CONFIGURED
    assert write(c, P2, 0, b"\x22" * 512).status == Status.GOOD
    assert write(c, P1, 1, b"\x11" * 512).status == Status.GOOD
    assert groups(c, P1) == {1: 0, 2: 0}


def test_port2_sees_identity_but_standby_for_media(c: Controller, env: Clocked) -> None:
    assert configure(c).status == Status.GOOD
    assert state(c) == RsoState.NO_SECONDARY
    changed(c, P1, P2)
    for cdb in (INQUIRY, REPORT_LUNS, RTPG):
        assert cmd(c, P2, 1, cdb).status == Status.GOOD
    assert sense(cmd(c, P2, 1, TUR)) == STANDBY
    assert sense(read(c, P2, 0, 1)) == STANDBY
    assert sense(write(c, P2, 0, b"\x00" * 512, lun=2)) == STANDBY
    sense_data = cmd(c, P2, 1, bytes((0x03, 0, 0, 0, 18, 0))).data
    assert (sense_data[2] & 0xF, sense_data[12], sense_data[13]) == STANDBY
    assert cmd(c, P2, 0, TUR).status == Status.GOOD  # LUN 0 answers on both ports
    assert write(c, P1, 0, b"\x11" * 512).status == Status.GOOD
    assert groups(c, P2) == {1: 0, 2: 2}
    assert groups(c, P1, lun=0) == {1: 0, 2: 2}
    res = cmd(c, P2, 0, ACKNOWLEDGE)
    assert block(res)["state"] == STATE_CODES[RsoState.OK]
    assert "RSO_SECONDARY_JOINED" in codes(c)


def test_configuration_order_and_wrong_ports_are_refused(c: Controller) -> None:
    assert sense(cmd(c, P2, 0, ACKNOWLEDGE)) == SEQUENCE  # recovery before the primary
    assert sense(cmd(c, P1, 0, HEARTBEAT)) == SEQUENCE
    res = configure(c, nexus=P2)
    assert sense(res) == WRONG_PORT and res.sense[15:18] == bytes((0xC0, 0, 0))
    assert state(c) == RsoState.NOT_CONFIGURED
    assert configure(c).status == Status.GOOD
    assert sense(cmd(c, P2, 0, HEARTBEAT)) == WRONG_PORT
    assert sense(cmd(c, P1, 0, ACKNOWLEDGE)) == WRONG_PORT
    assert sense(cmd(c, P1, 0, FAILOVER)) == WRONG_PORT
    bad = cmd(c, P1, 0, CONFIGURE, bytes((0x81, 0, 0, 0)) + struct.pack(">I", 1000))
    assert sense(bad) == (0x5, 0x26, 0x00) and bad.sense[15:18] == bytes((0x88 | 7, 0, 0))
    far = configure(c, timeout_ms=10_000_000)
    assert sense(far) == (0x5, 0x26, 0x00) and far.sense[16:18] == b"\x00\x04"
    assert sense(cmd(c, P1, 0, CONFIGURE[:8] + b"\x04\x00", b"\x01\x00\x00\x00")) == (0x5, 0x1A, 0x00)
    assert sense(cmd(c, P1, 0, bytes((0xC0, 1)) + bytes(6) + b"\x10\x00")) == (0x5, 0x24, 0x00)
    assert c.rso_status()["timeout_s"] == TIMEOUT_MS / 1000


# ------------------------------------------------------------------ the failure table
def test_primary_fails_recovery_takes_over(c: Controller, env: Clocked) -> None:
    running(c, env)
    acks = step(c, env, 4.5, hb=False)
    assert not block(acks[-1])["flags"] & 0x08
    acks = step(c, env, 1.0, hb=False)
    b = block(acks[-1])
    assert b["flags"] & 0x08 and b["state"] == STATE_CODES[RsoState.TIMEOUT_ERROR]
    assert b["hb_ms"] >= TIMEOUT_MS
    assert "RSO_TIMEOUT" in codes(c)
    # The monitor fences the primary, exits, and the recovery boots.
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    assert state(c) == RsoState.SECONDARY_RUNNING_AUTO
    assert sense(write(c, P2, 0, b"\x22" * 512)) == AA_CHANGED
    assert sense(write(c, P2, 0, b"\x22" * 512, lun=2)) == AA_CHANGED
    assert write(c, P2, 0, b"\x22" * 512).status == Status.GOOD
    changed(c, P1)  # the fenced port's nexuses are told too (SPC-4: every I_T nexus)
    assert sense(read(c, P1, 0, 1)) == UNAVAILABLE
    assert sense(read(c, P1, 0, 1, lun=2)) == UNAVAILABLE
    assert groups(c, P1) == {1: 3, 2: 0}
    assert "RSO_FAILOVER" in codes(c)


def test_an_answer_never_hides_a_passed_deadline_and_detection_is_measured(c: Controller, env: Clocked) -> None:
    running(c, env)
    env.clock.advance(TIMEOUT_MS / 1000 + 0.25)  # the timer has not fired yet (no advance call)
    b = block(cmd(c, P2, 0, ACKNOWLEDGE))
    assert b["flags"] & 0x08 and b["state"] == STATE_CODES[RsoState.TIMEOUT_ERROR]
    env.clock.advance(0.01)
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    # missed deadline (last heartbeat + timeout) -> fence: 0.25 s late timer + 10 ms reaction
    assert c.rso_status()["detection_ms"] == pytest.approx(260, abs=1)
    # a heartbeat that arrives after its deadline does not undo a timeout the recovery already saw
    assert block(cmd(c, P1, 0, HEARTBEAT))["fenced"] == 1


def test_hosts_write_the_same_event_log(c: Controller, env: Clocked) -> None:
    running(c, env)
    log = bytes((0xC5, 0, 0, 0, 0, 0, 0))
    text = b"HOST_ACK_LOST\0no acknowledgment for 5 s"
    assert cmd(c, P1, 0, log + struct.pack(">HB", len(text), 0), text).status == Status.GOOD
    ev = c.events()[-1]
    assert ev["code"] == "HOST_ACK_LOST" and "port 1 (iqn.2026-01.test:primary)" in ev["message"]
    bad = b"DRIVE_FAILED\0lies"
    assert sense(cmd(c, P2, 0, log + struct.pack(">HB", len(bad), 0), bad)) == (0x5, 0x26, 0x00)
    assert sense(cmd(c, P2, 0, log + struct.pack(">HB", 4096, 0), bad)) == (0x5, 0x24, 0x00)


def test_act_alone_controller_fences_at_the_deadline(c: Controller, env: Clocked) -> None:
    assert configure(c, act_alone=True).status == Status.GOOD
    changed(c, P1, P2)
    last = env.clock.now()
    assert c.next_deadline() == pytest.approx(last + TIMEOUT_MS / 1000)
    env.clock.advance(TIMEOUT_MS / 1000 - 0.001)
    c.advance(env.clock.now())
    assert write(c, P1, 0, b"\x11" * 512).status == Status.GOOD
    env.clock.advance(0.001)
    c.advance(env.clock.now())
    assert state(c) == RsoState.SECONDARY_RUNNING_AUTO
    changed(c, P1)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == UNAVAILABLE
    assert sense(write(c, P2, 0, b"\x22" * 512)) == AA_CHANGED
    assert write(c, P2, 0, b"\x22" * 512).status == Status.GOOD


def test_recovery_fails_while_primary_serves_raises_the_ack_alarm(c: Controller, env: Clocked) -> None:
    running(c, env)
    step(c, env, 5.5, ack=False)
    assert "RSO_ACK_LOST" in codes(c)
    assert state(c) == RsoState.DAEMON_DOWN
    res = cmd(c, P1, 0, HEARTBEAT)
    assert not block(res)["flags"] & 0x04  # the primary sees the lost acknowledgment
    assert write(c, P1, 0, b"\x11" * 512).status == Status.GOOD  # no failover
    step(c, env, 30, ack=False)
    assert c.rso_status()["failed_over"] is None
    step(c, env, 1)
    assert state(c) == RsoState.OK and "RSO_ACK_RESTORED" in codes(c)
    assert block(cmd(c, P1, 0, HEARTBEAT))["flags"] & 0x04


def test_recovery_fails_while_primary_offline_clients_lose_service(c: Controller, env: Clocked) -> None:
    running(c, env)
    step(c, env, 20, hb=False, ack=False)
    assert state(c) == RsoState.TIMEOUT_ERROR
    assert {"RSO_TIMEOUT", "RSO_SERVICE_LOST"} <= set(codes(c))
    assert sense(read(c, P2, 0, 1)) == STANDBY  # nobody took over
    assert c.rso_status()["failovers"] == 0


def test_storage_system_fails_both_lose_service_and_no_failover(c: Controller, env: Clocked) -> None:
    running(c, env)
    c.power_off()
    assert c.next_deadline() is None
    env.clock.advance(60)
    c.advance(env.clock.now())
    assert sense(read(c, P1, 0, 1))[0] == 0x2
    assert sense(read(c, P2, 0, 1))[0] == 0x2
    assert c.rso_status()["failed_over"] is None


def test_after_storage_power_loss_the_primary_does_not_resume_unattended(c: Controller, env: Clocked) -> None:
    running(c, env)
    c.power_off()
    env.clock.advance(30)
    c.power_on()
    login(c, P1)
    login(c, P2)
    # Hosts that connect before the logical drives are ready see them not ready (spinning up).
    assert sense(read(c, P1, 0, 1)) == (0x2, 0x04, 0x01)
    st = c.rso_status()
    assert st["awaiting_primary"] and st["state"] == RsoState.DAEMON_DOWN
    assert block(cmd(c, P2, 0, STATUS))["flags"] & 0x40
    # The recovery keeps acknowledging for minutes: no deadline runs, nobody takes over, no service.
    acks = step(c, env, 300, hb=False)
    assert not any(block(a)["flags"] & 0x08 for a in acks)
    assert c.rso_status()["failovers"] == 0 and "RSO_TIMEOUT" not in codes(c)[-20:]
    # An administrator starts a normal boot: the primary's first heartbeat arms the deadline again.
    assert not block(cmd(c, P1, 0, HEARTBEAT))["flags"] & 0x40
    assert "RSO_PRIMARY_STARTED" in codes(c)
    step(c, env, 2)
    assert state(c) == RsoState.OK
    assert read(c, P1, 0, 1).status == Status.GOOD
    step(c, env, 6, hb=False)
    assert state(c) == RsoState.TIMEOUT_ERROR


def test_blind_spot_dead_nic_with_heartbeats_never_fails_over(c: Controller, env: Clocked) -> None:
    running(c, env)
    # The primary's NIC is dead: clients lose it, but its heartbeat keeps running.
    step(c, env, 600, every=2.0)
    assert state(c) == RsoState.OK
    assert c.rso_status()["failovers"] == 0
    assert "RSO_FAILOVER" not in codes(c)


def test_broken_port2_link_fails_over_although_the_primary_heartbeats(c: Controller, env: Clocked) -> None:
    running(c, env)
    c.fault_link(2, "down")
    assert state(c) == RsoState.LINK_DOWN
    acks = step(c, env, 6)
    assert block(acks[-1])["flags"] & 0x08
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    assert state(c) == RsoState.SECONDARY_RUNNING_AUTO
    changed(c, P1)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == UNAVAILABLE


def test_broken_port2_link_with_act_alone(c: Controller, env: Clocked) -> None:
    assert configure(c, act_alone=True).status == Status.GOOD
    step(c, env, 2)
    c.fault_link(2, "down")
    step(c, env, 6, ack=False)
    assert state(c) == RsoState.SECONDARY_RUNNING_AUTO


def test_link_back_before_the_deadline_keeps_the_primary(c: Controller, env: Clocked) -> None:
    running(c, env)
    c.fault_link(2, "down")
    step(c, env, 3)
    c.fault_link(2, "up")
    step(c, env, 10)
    assert state(c) == RsoState.OK
    with pytest.raises(ControllerError):
        c.fault_link(3, "down")
    with pytest.raises(ControllerError):
        c.fault_link(1, "sideways")


# ------------------------------------------------------------------ forced failover and restore
def test_forced_failover_any_time(c: Controller, env: Clocked) -> None:
    running(c, env)
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    assert state(c) == RsoState.SECONDARY_RUNNING_USER
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD  # idempotent
    assert c.rso_status()["failovers"] == 1
    changed(c, P1)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == UNAVAILABLE
    assert cmd(c, P1, 0, HEARTBEAT).status == Status.GOOD  # LUN 0 still answers the fenced primary
    assert block(cmd(c, P1, 0, HEARTBEAT))["fenced"] == 1


def test_management_failover_and_restore(c: Controller, env: Clocked) -> None:
    with pytest.raises(ControllerError):
        c.rso_failover()  # RSO not configured
    c.rso_configure(True, 5.0)
    c.rso_failover()
    assert c.describe()["rso"]["state"] == RsoState.SECONDARY_RUNNING_USER
    with pytest.raises(ControllerError, match="restore"):
        c.rso_configure(False)
    with pytest.raises(ControllerError, match="port 2"):
        c.rso_restore()


def test_restore_refused_while_recovery_logged_in_then_allowed(c: Controller, env: Clocked) -> None:
    running(c, env)
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    with pytest.raises(ControllerError):
        c.rso_restore()
    c.target.nexus_loss(P2)  # the recovery server is shut down
    c.rso_restore()
    assert state(c) == RsoState.DAEMON_DOWN  # until the restored primary heartbeats
    assert c.next_deadline() is None
    assert "RSO_RESTORED" in codes(c)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == AA_CHANGED
    assert write(c, P1, 0, b"\x11" * 512).status == Status.GOOD
    login(c, P2)
    assert sense(read(c, P2, 0, 1)) == STANDBY
    step(c, env, 2)
    assert state(c) == RsoState.OK
    with pytest.raises(ControllerError):
        c.rso_restore()  # nothing to restore


def test_fence_is_keyed_on_the_port_not_the_session(c: Controller, env: Clocked) -> None:
    running(c, env)
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    c.target.nexus_loss(P1)
    again = Nexus(P1.initiator.replace("0x000001", "0x000009"), 1)
    login(c, again)
    assert sense(write(c, again, 0, b"\x11" * 512)) == UNAVAILABLE
    login(c, P1)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == UNAVAILABLE
    assert groups(c, again) == {1: 3, 2: 0}


def test_split_brain_writes_from_the_fenced_primary_never_land(c: Controller, env: Clocked) -> None:
    running(c, env)
    before = pattern(7, 64 * 512)
    assert write(c, P1, 0, before).status == Status.GOOD
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    changed(c, P1)
    for lba in range(0, 64, 4):  # the primary never noticed it died
        assert sense(write(c, P1, lba, b"\xee" * 2048)) == UNAVAILABLE
        assert sense(write(c, P1, lba, b"\xee" * 512, lun=2)) == UNAVAILABLE
    sync = bytes((0x35,)) + bytes(9)
    assert sense(cmd(c, P1, 1, sync)) == UNAVAILABLE
    assert sense(read(c, P2, 0, 1)) == AA_CHANGED
    res = read(c, P2, 0, 64)
    assert res.status == Status.GOOD
    assert hashlib.sha256(bytes(res.data)).digest() == hashlib.sha256(before).digest()


# ------------------------------------------------------------------ status and persistence
def test_status_command_reports_state_config_and_counters(c: Controller, env: Clocked) -> None:
    running(c, env)
    res = cmd(c, P2, 0, STATUS)
    assert res.status == Status.GOOD and len(res.data) == 32
    b = block(res)
    assert b["state"] == STATE_CODES[RsoState.OK] and b["timeout_ms"] == TIMEOUT_MS
    assert b["flags"] & 0x25 == 0x25 and b["active"] == 1 and b["fenced"] == 0
    hbs, acks, fos, links, sessions, _ = struct.unpack(">IIIBBH", bytes(res.data)[16:32])
    assert (hbs, acks, fos, links, sessions) == (3, 3, 0, 3, 1)
    assert len(cmd(c, P1, 0, STATUS[:7] + b"\x00\x08\x00").data) == 8


def test_settings_and_fence_survive_a_controller_reopen(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    login(c, P1)
    login(c, P2)
    assert configure(c).status == Status.GOOD
    assert cmd(c, P2, 0, FAILOVER).status == Status.GOOD
    c.close()
    c = env.open(tmp_path)
    st = c.rso_status()
    assert st["state"] == RsoState.SECONDARY_RUNNING_USER and st["timeout_s"] == 5.0
    login(c, P1)
    assert sense(write(c, P1, 0, b"\x11" * 512)) == UNAVAILABLE
    c.rso_restore()
    c.close()
    c = env.open(tmp_path)
    assert c.rso_status()["state"] == RsoState.DAEMON_DOWN and c.rso_status()["awaiting_primary"]
    login(c, P2)
    assert sense(read(c, P2, 0, 1)) == STANDBY
    c.rso_configure(False)
    c.close()
    c = env.open(tmp_path)
    assert c.rso_status()["state"] == RsoState.DISABLED
    login(c, P2)
    assert write(c, P2, 0, b"\x22" * 512).status == Status.GOOD
    c.close()
