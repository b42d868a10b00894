"""ALUA as SPC-4 says: every change of a port group's state is 2A/06 for every I_T nexus on both
ports; REPORT TARGET PORT GROUPS headers; `transitioning` on the virtual clock; port faults."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from firmware_model.controller import Controller, ControllerError
from firmware_model.controller.nvram import NVRAM_FILE
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from tests.unit.shelf_helpers import Clocked, sense

P1 = Nexus("iqn.2026-01.test:primary,i,0x000001", 1)
P1B = Nexus("iqn.2026-01.test:other,i,0x000003", 1)
P2 = Nexus("iqn.2026-01.test:recovery,i,0x000002", 2)
P2B = Nexus("iqn.2026-01.test:other,i,0x000004", 2)
ALL = (P1, P1B, P2, P2B)

TUR = bytes(6)
INQUIRY = bytes((0x12, 0, 0, 0, 96, 0))
AA_CHANGED = (0x6, 0x2A, 0x06)
STANDBY = (0x2, 0x04, 0x0B)
UNAVAILABLE = (0x2, 0x04, 0x0C)
TRANSITION = (0x2, 0x04, 0x0A)
AO, STBY, UNAV, OFFLINE, TRANS = 0x0, 0x2, 0x3, 0xE, 0xF


def rtpg(extended: bool = False, alloc: int = 1024) -> bytes:
    return struct.pack(">BBIIBB", 0xA3, 0x0A | (0x20 if extended else 0), 0, alloc, 0, 0)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


@pytest.fixture
def c(env: Clocked, tmp_path: Path) -> Controller:
    ctl = env.open(tmp_path)
    for n in ALL:
        login(ctl, n)
    return ctl


def cmd(c: Controller, nexus: Nexus, lun: int, cdb: bytes, data: bytes = b"") -> ScsiResult:
    return c.target.execute(ScsiRequest(nexus, lun, cdb, data, len(data)))


def login(c: Controller, nexus: Nexus) -> None:
    """A session logs in and takes its power-on unit attentions."""
    cmd(c, nexus, 0, INQUIRY)
    for lun in c.target.lun_list():
        while c.target.pop_unit_attention(nexus, lun) is not None:
            pass


def write(c: Controller, nexus: Nexus, lun: int = 1) -> ScsiResult:
    return cmd(c, nexus, lun, struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0), b"\x5a" * 512)


def told(c: Controller, nexuses: tuple[Nexus, ...] = ALL) -> None:
    """Each nexus has exactly one 2A/06 on every logical drive (none on LUN 0), and takes it."""
    for n in nexuses:
        assert c.target.pending_unit_attentions(n, 0) == []
        for lun in (1, 2):
            assert c.target.pending_unit_attentions(n, lun) == [0x2A06], (n, lun)
            assert sense(cmd(c, n, lun, TUR)) == AA_CHANGED
    quiet(c)


def quiet(c: Controller) -> None:
    for n in ALL:
        for lun in (0, 1, 2):
            assert c.target.pending_unit_attentions(n, lun) == [], (n, lun)


def groups(c: Controller, nexus: Nexus = P1, lun: int = 1) -> dict[int, int]:
    res = cmd(c, nexus, lun, rtpg())
    assert res.status == Status.GOOD, sense(res)
    d = bytes(res.data)
    return {struct.unpack(">H", d[off + 2: off + 4])[0]: d[off] & 0x0F for off in range(4, 4 + d[3], 12)}


# ------------------------------------------------------------------ notifications
def test_rso_enable_failover_restore_tell_every_nexus_on_both_ports(c: Controller) -> None:
    quiet(c)
    c.rso_configure(True)  # port 2 becomes standby
    told(c)
    assert groups(c) == {1: AO, 2: STBY}
    assert sense(write(c, P2B)) == STANDBY
    c.rso_failover()  # both ports change
    told(c)
    assert sense(write(c, P1B)) == UNAVAILABLE
    assert write(c, P2).status == Status.GOOD
    for n in (P2, P2B):  # restore waits for the recovery host to leave port 2
        c.target.nexus_loss(n)
    c.rso_restore()
    told(c, (P1, P1B))
    assert groups(c) == {1: AO, 2: STBY}
    assert write(c, P1B).status == Status.GOOD
    quiet(c)


def test_nothing_changed_queues_nothing(c: Controller) -> None:
    c.rso_configure(True)
    told(c)
    c.rso_configure(True, timeout_s=10)  # same port states
    quiet(c)


def test_a_failover_by_the_heartbeat_deadline_tells_the_fenced_port_too(c: Controller, env: Clocked) -> None:
    c.rso_configure(True, timeout_s=2, act_alone=True)
    told(c)
    env.clock.advance(2.5)
    c.advance(env.clock.now())
    assert c.rso_status()["failed_over"] == "auto"
    told(c)
    assert sense(write(c, P1)) == UNAVAILABLE


# ------------------------------------------------------------------ REPORT TARGET PORT GROUPS
def test_rtpg_length_only_and_extended_headers(c: Controller) -> None:
    short = bytes(cmd(c, P2, 1, rtpg()).data)
    assert short[:4] == struct.pack(">I", 24)  # two 12-byte descriptors, nothing else
    assert short[4:8] == bytes((AO, 0xCD, 0, 1)) and short[8:12] == bytes((0, 0, 0, 1))  # T,O,U,S,AO_SUP
    assert short[12:16] == bytes((0, 0, 0, 1))  # relative target port 1
    assert short[16:20] == bytes((AO, 0xCD, 0, 2))
    c.set_alua(1500)
    long = bytes(cmd(c, P2, 1, rtpg(extended=True)).data)
    assert long[:8] == struct.pack(">I", 28) + bytes((0x10, 2, 0, 0))  # format 001b, 2 s (rounded up)
    assert long[8:] == short[4:]
    c.set_alua(0)
    c.rso_configure(True)
    told(c)
    long = bytes(cmd(c, P1, 2, rtpg(extended=True)).data)
    assert long[5] == 0
    assert long[8:16] == bytes((AO, 0xCD, 0, 1, 0, 0, 0, 1))  # port 1 did not change
    assert long[20:28] == bytes((STBY, 0xCD, 0, 2, 0, 0x02, 0, 1))  # STATUS CODE 02h: an implicit change
    assert cmd(c, P1, 1, rtpg(alloc=6)).data == short[:6]  # the allocation length cuts
    bad = cmd(c, P1, 1, struct.pack(">BBIIBB", 0xA3, 0x0A | 0x40, 0, 1024, 0, 0))
    assert sense(bad) == (0x5, 0x24, 0x00)
    stpg = struct.pack(">BBIIBB", 0xA4, 0x0A, 0, 12, 0, 0)  # implicit only: no SET TARGET PORT GROUPS
    assert sense(cmd(c, P1, 1, stpg, bytes(12))) == (0x5, 0x20, 0x00)


# ------------------------------------------------------------------ transitioning
def test_transitioning_then_the_new_state_on_the_virtual_clock(c: Controller, env: Clocked) -> None:
    c.set_alua(2000)
    t0 = env.clock.now()
    c.rso_configure(True)
    told(c)
    assert groups(c) == {1: AO, 2: TRANS}
    assert c.next_deadline() == pytest.approx(t0 + 2.0)
    assert sense(write(c, P2)) == TRANSITION
    assert sense(cmd(c, P2B, 1, TUR)) == TRANSITION
    assert cmd(c, P2, 1, INQUIRY).status == Status.GOOD  # identity answers in every state
    assert write(c, P1).status == Status.GOOD  # port 1 did not change
    assert c.alua_status()["ports"][1]["target_state"] == "standby"
    env.clock.advance(1.999)
    c.advance(env.clock.now())
    assert groups(c) == {1: AO, 2: TRANS}
    quiet(c)
    env.clock.advance(0.001)
    c.advance(env.clock.now())
    told(c)  # the transition's end is a change of its own (SPC-4 5.15.2.6)
    assert groups(c) == {1: AO, 2: STBY}
    assert sense(write(c, P2)) == STANDBY


def test_a_failover_transition_keeps_the_primary_fenced_throughout(c: Controller, env: Clocked) -> None:
    c.rso_configure(True)
    told(c)
    c.set_alua(500)
    c.rso_failover()
    told(c)
    assert groups(c) == {1: TRANS, 2: TRANS}
    assert sense(write(c, P1)) == TRANSITION and sense(write(c, P2)) == TRANSITION
    env.clock.advance(0.5)
    c.advance(env.clock.now())
    told(c)
    assert sense(write(c, P1)) == UNAVAILABLE
    assert write(c, P2).status == Status.GOOD
    assert c.alua_status()["transition_left_ms"] is None  # nothing pending


def test_a_change_during_a_transition_restarts_its_time(c: Controller, env: Clocked) -> None:
    c.set_alua(1000)
    c.rso_configure(True)
    told(c)
    env.clock.advance(0.6)
    c.set_port_alua(1, "unavailable")
    told(c)
    assert groups(c) == {1: TRANS, 2: TRANS}
    env.clock.advance(0.6)  # the first change's time is up, the second's not
    c.advance(env.clock.now())
    assert groups(c) == {1: TRANS, 2: TRANS}
    env.clock.advance(0.4)
    c.advance(env.clock.now())
    told(c)
    assert groups(c, P2) == {1: UNAV, 2: STBY}


# ------------------------------------------------------------------ port faults
def test_port_fault_states_offline_and_unavailable(c: Controller) -> None:
    st = c.set_port_alua(2, "offline")
    assert st["ports"][1] == {"port": 2, "group": 2, "state": "offline", "target_state": "offline",
                              "fault": "offline", "implicit_change": True}
    told(c)
    assert groups(c) == {1: AO, 2: OFFLINE}
    assert sense(write(c, P2)) == UNAVAILABLE
    assert write(c, P1).status == Status.GOOD
    c.set_port_alua(2, "offline")  # again: no change, no attention
    quiet(c)
    c.set_port_alua(2, "active")  # lifted: the port follows RSO (disabled: active)
    told(c)
    assert write(c, P2).status == Status.GOOD
    c.rso_configure(True)
    told(c)
    c.set_port_alua(1, "unavailable")
    told(c)
    assert groups(c, P2) == {1: UNAV, 2: STBY}
    c.set_port_alua(1, "ACTIVE")
    told(c)
    assert groups(c) == {1: AO, 2: STBY}


def test_bad_port_states_and_transition_times_are_refused(c: Controller) -> None:
    with pytest.raises(ControllerError, match="port 3"):
        c.set_port_alua(3, "offline")
    with pytest.raises(ControllerError, match="not one of"):
        c.set_port_alua(1, "standby")
    with pytest.raises(ControllerError, match="outside"):
        c.set_alua(255_001)
    quiet(c)


def test_the_transition_time_survives_a_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    c.set_alua(750)
    c.close()
    assert json.loads((tmp_path / NVRAM_FILE).read_text())["alua"] == {"transition_ms": 750}
    again = env.open(tmp_path)
    assert again.alua_status()["transition_ms"] == 750
    assert again.alua_status()["tpgs"] == "implicit"
    again.close()


def test_an_nvram_save_during_start_up_keeps_the_alua_section() -> None:
    """Start-up can save NVRAM before the SCSI target exists (interrupted writes replayed after a
    crash remap a media error): the ALUA section read from NVRAM is written back as it was."""
    from types import SimpleNamespace

    from firmware_model.controller.alua_link import AluaLink

    link = AluaLink(SimpleNamespace())  # type: ignore[arg-type]  # a controller without its target yet
    link.remember({"transition_ms": 250.0})
    assert link.to_dict() == {"transition_ms": 250.0}
