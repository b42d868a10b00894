"""Per-command error injection: which commands match, how often, the exact sense, and the held
answers (TIMEOUT, DELAY) through the sans-I/O iSCSI connection, cleaned up by task management."""

from __future__ import annotations

import struct

import pytest

from firmware_model.clock import VirtualClock
from firmware_model.scsi.constants import Asc
from firmware_model.scsi.errors import ScsiError
from firmware_model.scsi.injection import HeldResult, InjectionError, Injections, block_range
from firmware_model.scsi.sense import build_sense
from firmware_model.scsi.target import ScsiTarget
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from msa500_emu.iscsi.connection import Connection
from msa500_emu.iscsi.constants import Op, TmfFunction, TmfResponse
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.iscsi.pdu import encode

from .iscsi_harness import TARGET, Clock, LoopSocket
from .test_scsi_target import A, B, make_target, run


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0, lba, 0, blocks, 0)


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def fixed(res: ScsiResult) -> tuple[int, int, int, int | None]:
    """(key, asc, ascq, INFORMATION or None when VALID is clear) of fixed-format sense."""
    s = res.sense
    assert s[0] & 0x7F == 0x70, s.hex()
    info = int.from_bytes(s[3:7], "big") if s[0] & 0x80 else None
    return s[2] & 0xF, s[12], s[13], info


@pytest.fixture
def target() -> ScsiTarget:
    t = make_target(power_on=False)
    for lun in (0, 1):  # the new nexus's unit attentions, out of the way
        for _ in range(4):
            run(t, [0, 0, 0, 0, 0, 0], lun=lun)
            run(t, [0, 0, 0, 0, 0, 0], lun=lun, nexus=B)
    return t


def test_no_injection_costs_one_check_and_changes_nothing(target: ScsiTarget) -> None:
    assert target.injections.active == 0
    assert run(target, read10(0, 8)).status == Status.GOOD


def test_medium_error_once_on_the_lba_range_with_information(target: ScsiTarget) -> None:
    inj = target.injections.add(1, "READ", "MEDIUM", lba_first=100, lba_last=107)
    assert run(target, read10(0, 8)).status == Status.GOOD  # outside the range
    assert run(target, write10(100, 8)).status == Status.GOOD  # a write: OP=READ does not match it
    res = run(target, read10(96, 8))  # blocks 96..103 overlap 100..107
    assert res.status == Status.CHECK_CONDITION
    assert fixed(res) == (0x3, 0x11, 0x00, 100)  # INFORMATION: the first block of the range hit
    assert run(target, read10(96, 8)).status == Status.GOOD  # COUNT=1: spent
    assert inj.fired == 1 and inj.remaining == 0 and target.injections.active == 0


def test_medium_error_of_a_write_is_write_error(target: ScsiTarget) -> None:
    target.injections.add(1, "write", "medium", count=None)
    assert fixed(run(target, write10(7, 1), b"\0" * 512)) == (0x3, 0x0C, 0x00, 7)
    assert fixed(run(target, write10(9, 1), b"\0" * 512)) == (0x3, 0x0C, 0x00, 9)  # ALWAYS


@pytest.mark.parametrize(("error", "want"), [
    ("HARDWARE", (0x4, 0x44, 0x00, None)),
    ("NOT-READY", (0x2, 0x04, 0x00, None)),
    ("ABORTED", (0xB, 0x00, 0x00, None)),
])
def test_named_errors_have_their_sense(target: ScsiTarget, error: str, want: tuple[int, int, int, None]) -> None:
    target.injections.add(1, "ANY", error)
    assert fixed(run(target, [0, 0, 0, 0, 0, 0])) == want


def test_statuses_and_custom_sense(target: ScsiTarget) -> None:
    target.injections.add(1, "0x28", "BUSY")
    target.injections.add(1, "0x28", "task-set-full")
    target.injections.add(1, "0x28", "SENSE", sense="1/18/02")
    assert run(target, read10(0, 1)).status == Status.BUSY
    assert run(target, read10(0, 1)).status == Status.TASK_SET_FULL
    res = run(target, read10(0, 1))
    assert res.status == Status.CHECK_CONDITION and fixed(res)[:3] == (0x1, 0x18, 0x02)
    assert run(target, read10(0, 1)).status == Status.GOOD


def test_descriptor_sense_when_the_unit_uses_it(target: ScsiTarget) -> None:
    target.luns[1].mode.d_sense = True  # what MODE SELECT of the control page's D_SENSE sets
    target.injections.add(1, "READ", "MEDIUM", lba_first=5, lba_last=5)
    res = run(target, read16(0, 16))
    assert res.sense[0] == 0x72 and res.sense[1:4] == bytes((3, 0x11, 0))
    assert res.sense[8:12] == b"\x00\x0a\x80\x00" and int.from_bytes(res.sense[12:20], "big") == 5


def test_initiator_port_and_count(target: ScsiTarget) -> None:
    inj = target.injections.add(1, "ANY", "ABORTED", count=2, initiator="IQN.1994-05.com.redhat:b", port=2)
    tur = [0, 0, 0, 0, 0, 0]
    assert run(target, tur, nexus=A).status == Status.GOOD  # another host
    assert run(target, tur, nexus=Nexus(B.initiator, 1)).status == Status.GOOD  # that host, the other port
    assert run(target, tur, nexus=B).status == Status.CHECK_CONDITION
    assert run(target, tur, nexus=B).status == Status.CHECK_CONDITION
    assert run(target, tur, nexus=B).status == Status.GOOD
    assert inj.fired == 2


def test_lun_zero_and_other_units_are_never_hit(target: ScsiTarget) -> None:
    target.injections.add(2, "ANY", "HARDWARE", count=None)
    assert run(target, [0, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(target, [0, 0, 0, 0, 0, 0], lun=0).status == Status.GOOD


def test_unit_attention_comes_before_the_injection(target: ScsiTarget) -> None:
    target.injections.add(1, "ANY", "HARDWARE")
    target.establish_unit_attention(1, Asc.REPORTED_LUNS_DATA_HAS_CHANGED, nexus=A)
    res = run(target, [0, 0, 0, 0, 0, 0])  # the pending unit attention is reported first
    assert res.status == Status.CHECK_CONDITION and fixed(res)[0] == 0x6
    res = run(target, [0, 0, 0, 0, 0, 0])
    assert fixed(res)[:3] == (0x4, 0x44, 0x00)


def test_delay_runs_the_command_and_timeout_does_not(target: ScsiTarget) -> None:
    target.injections.add(1, "WRITE", "DELAY", delay_ms=250)
    res = run(target, write10(3, 1), b"\xab" * 512)
    assert isinstance(res, HeldResult) and res.hold_s == 0.25 and res.status == Status.GOOD
    assert run(target, read10(3, 1)).data == b"\xab" * 512  # the write happened
    target.injections.add(1, "WRITE", "TIMEOUT")
    res = run(target, write10(3, 1), b"\xcd" * 512)
    assert isinstance(res, HeldResult) and res.hold_s is None
    assert run(target, read10(3, 1)).data == b"\xab" * 512  # the timed-out write never ran


def test_bad_injections_are_refused() -> None:
    inj = Injections(VirtualClock())
    for args, kw in [(("READ", "sense"), {}), (("READ", "medium"), {"sense": "3/11/0"}),
                     (("READ", "delay"), {}), (("0x1FF", "busy"), {}), (("READS", "busy"), {}),
                     (("READ", "nope"), {}), (("READ", "busy"), {"lba_first": 9, "lba_last": 3}),
                     (("READ", "sense"), {"sense": "0/11/0"}), (("READ", "sense"), {"sense": "3/x/0"})]:
        with pytest.raises(InjectionError):
            inj.add(1, *args, **kw)  # type: ignore[arg-type]
    assert inj.rows() == [] and inj.active == 0


def test_show_rows_and_delete() -> None:
    inj = Injections(VirtualClock())
    a = inj.add(1, "read", "medium", lba_first=0, lba_last=7)
    inj.add(2, "0x2a", "sense", sense="3/11/0", count=None, initiator="iqn.x", port=1)
    rows = inj.rows()
    assert rows[0] | {} == {"id": a.id, "unit": 1, "op": "READ", "lba_first": 0, "lba_last": 7, "remaining": 1,
                            "always": False, "initiator": None, "port": None, "error": "MEDIUM", "fired": 0}
    assert rows[1]["op"] == "0x2A" and rows[1]["error"] == "SENSE=3/11/00" and rows[1]["always"]
    inj.delete(a.id)
    with pytest.raises(InjectionError, match="no injection"):
        inj.delete(a.id)
    assert inj.clear() == 1 and inj.active == 0


def test_firings_are_told_at_most_once_a_second() -> None:
    clock = VirtualClock()
    inj = Injections(clock)
    told: list[int] = []
    inj.notify = lambda _i, _r, times: told.append(times)
    inj.add(1, "ANY", "BUSY", count=None)
    req = ScsiRequest(A, 1, bytes(6))
    for _ in range(5):
        assert inj.answer(req, False, ScsiResult) is not None
    clock.advance(1.0)
    assert inj.answer(req, False, ScsiResult) is not None
    assert told == [1, 5]  # the first at once; the next four and this one a second later


def test_block_range_of_each_layout() -> None:
    assert block_range(bytes([0x08, 0x01, 0x02, 0x03, 0, 0])) == (0x10203, 256)  # READ(6): 0 is 256
    assert block_range(read10(7, 3)) == (7, 3)
    assert block_range(struct.pack(">BBIIBB", 0xA8, 0, 9, 4, 0, 0)) == (9, 4)
    assert block_range(read16(1 << 40, 2)) == (1 << 40, 2)
    assert block_range(bytes(6)) is None  # TEST UNIT READY addresses no block
    assert block_range(bytes([0x28, 0])) is None  # too short: the unit answers it


# ------------------------------------------------------------ through the sans-I/O connection
def session(target: ScsiTarget) -> tuple[Initiator, Connection, Clock]:
    cfg = NodeConfig(target_name=TARGET, nop_interval=5, nop_timeout=15)
    node = TargetNode(cfg, target, [PortalInfo(1, "127.0.0.1", 3260), PortalInfo(2, "127.0.0.1", 3261)])
    clock = Clock()
    conn = Connection(node, node.portals[1], clock)
    ini = Initiator(config=InitiatorConfig(initiator_name="iqn.2026-12.lab:web"), sock=LoopSocket(conn))
    ini.login(TARGET)
    ini.clear_unit_attentions(1)
    return ini, conn, clock


def send_read(ini: Initiator, conn: Connection, itt: int, lba: int) -> None:
    bhs = bytearray(48)
    bhs[0], bhs[1] = Op.SCSI_CMD, 0xC1  # final, read, simple
    bhs[9] = 1
    struct.pack_into(">IIII", bhs, 16, itt, 512, ini.cmd_sn, ini.exp_stat_sn)
    bhs[32:42] = read10(lba, 1)
    ini.cmd_sn += 1
    conn.receive(b"".join(bytes(c) for c in encode(bhs)))


def test_timeout_holds_the_task_until_abort_task(target: ScsiTarget) -> None:
    ini, conn, _ = session(target)
    target.injections.add(1, "READ", "TIMEOUT")
    send_read(ini, conn, 0x77, 0)
    assert conn.take_output() == []  # no Data-In, no response
    assert conn.stalled == {0x77: 1} and conn.busy == 1
    assert ini.task_mgmt(TmfFunction.ABORT_TASK, 1, rtt=0x77, ref_cmd_sn=ini.cmd_sn - 2) == TmfResponse.COMPLETE
    assert conn.stalled == {} and conn.busy == 0
    assert ini.read(1, 0, 1) == bytes(512)  # COUNT=1: the next read is answered; the session goes on


def test_timeout_tasks_go_with_a_lun_reset_and_the_session(target: ScsiTarget) -> None:
    ini, conn, _ = session(target)
    target.injections.add(1, "READ", "TIMEOUT", count=2)
    send_read(ini, conn, 0x10, 0)
    send_read(ini, conn, 0x11, 8)
    assert set(conn.stalled) == {0x10, 0x11}
    assert ini.task_mgmt(TmfFunction.LOGICAL_UNIT_RESET, 1) == TmfResponse.COMPLETE
    assert conn.stalled == {}
    target.injections.add(1, "READ", "TIMEOUT")
    ini.clear_unit_attentions(1)
    send_read(ini, conn, 0x12, 0)
    assert conn.stalled == {0x12: 1}
    conn.connection_lost()
    assert conn.stalled == {} and conn.busy == 0


def test_delay_holds_the_response_on_the_connection_clock(target: ScsiTarget) -> None:
    ini, conn, clock = session(target)
    target.injections.add(1, "READ", "DELAY", delay_ms=400)
    send_read(ini, conn, 0x21, 0)
    assert conn.take_output() == [] and conn.next_deadline() == pytest.approx(0.4)
    clock.t = 0.4
    conn.on_timer(clock.t)
    pdu = ini.recv_pdu()
    assert pdu.opcode == Op.DATA_IN and pdu.itt == 0x21


def test_medium_error_reaches_the_host_with_its_sense(target: ScsiTarget) -> None:
    ini, _, _ = session(target)
    target.injections.add(1, "READ", "MEDIUM", lba_first=4, lba_last=4, initiator="iqn.2026-12.lab:web")
    r = ini.scsi(1, read10(0, 8), read_len=4096)
    assert r.status == Status.CHECK_CONDITION and r.sense == build_sense(ScsiError(3, 0x11, 0, info=4))
