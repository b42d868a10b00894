"""The iSCSI session layer under random interleavings (hypothesis state machine, no network).

One initiator drives the sans-I/O target Connection PDU by PDU with several commands in flight:
reads and writes (immediate, unsolicited and solicited Data-Out, answered one R2T at a time in any
order across tasks), NOP-Out pings, task management (ABORT TASK, ABORT TASK SET, LUN RESET),
CmdSN out of order, commands to a LUN that does not exist, the target's own NOP-In pings (answered
or not, the clock moving on), logout, a dropped TCP connection and session reinstatement (the same
ISID logging in again while the old connection still has tasks).

What must hold after every step, whatever the order:
- every answer is to a command in flight, at most once, never to an aborted one; StatSN rises by
  one per status; ExpCmdSN and MaxCmdSN never go back;
- data read back is the model's (the writes that got GOOD, in the order their statuses came);
- the only Reject is for something the machine did on purpose; nothing raises;
- the target holds no more tasks than the initiator has waiting for R2Ts.
At the end every task in flight is finished and the whole disk reads back as the model says.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from msa500_emu.iscsi.constants import RESERVED_TAG, Op, TmfFunction, TmfResponse
from msa500_emu.iscsi.initiator import InitiatorConfig
from msa500_emu.iscsi.node import sn_lt
from msa500_emu.iscsi.pdu import Pdu

from .iscsi_harness import TARGET, Clock, FakeDisk, connect, make_node

BS = 512
BLOCKS = 64
ISID = b"\x80\x12\x34\x56\x00\x01"


@dataclass
class Pending:
    """A command the initiator sent and has no status for yet."""

    itt: int
    cmd_sn: int
    kind: str  # read, write, tur, badlun
    lba: int = 0
    data: bytes = b""  # a write's data / a read's buffer as Data-In arrives
    r2ts: list[tuple[int, int, int]] = field(default_factory=list)  # (ttt, offset, length) to answer
    buf: bytearray = field(default_factory=bytearray)


class Link:
    """One logged-in connection, driven PDU by PDU."""

    def __init__(self, machine: SessionMachine, config: InitiatorConfig) -> None:
        self.m = machine
        self.ini, self.conn = connect(machine.node, config=config, clock=machine.clock)
        self.ini.login(TARGET)
        self.itts = itertools.count(0x1000)
        self.pending: dict[int, Pending] = {}
        self.pings: dict[int, bytes] = {}  # NOP-Out ITT -> payload it must echo
        self.exp_stat_sn = self.ini.exp_stat_sn
        self.exp_cmd_sn = self.ini.cmd_sn
        self.max_cmd_sn = self.ini.max_cmd_sn
        self.tmf: dict[int, str] = {}  # TMF ITT -> what it was
        self.tmf_answers: list[tuple[str, int]] = []
        self.logged_out = False
        self.p = self.ini.params
        self.seg = self.ini.target_max_recv

    @property
    def alive(self) -> bool:
        return not (self.conn.closed or self.conn.close_after_flush)

    def window_open(self) -> bool:
        return not sn_lt(self.max_cmd_sn, self.ini.cmd_sn)

    # -- sending -----------------------------------------------------------------------
    def _send(self, bhs: bytearray, data: bytes = b"") -> None:
        self.ini.send_pdu(bhs, data)
        self.drain()

    def command(self, kind: str, lun: int, cdb: bytes, *, lba: int = 0, data: bytes = b"",
                read_len: int = 0) -> None:
        itt = next(self.itts)
        sn = self.ini.cmd_sn
        self.ini.cmd_sn = (sn + 1) & 0xFFFFFFFF
        self.pending[itt] = Pending(itt, sn, kind, lba, data)
        bhs = bytearray(48)
        bhs[0] = Op.SCSI_CMD
        length = len(data) or read_len
        flags = 0x01 | (0x20 if data else 0x40 if read_len else 0)
        immediate = b""
        if data and self.p.get("ImmediateData") == "Yes":
            immediate = data[: min(int(self.p["FirstBurstLength"]), self.seg)]
        unsolicited_end = len(immediate)
        if data and self.p.get("InitialR2T") == "No":
            unsolicited_end = min(int(self.p["FirstBurstLength"]), len(data))
        if unsolicited_end <= len(immediate):
            flags |= 0x80
        bhs[1] = flags
        bhs[9] = lun
        struct.pack_into(">IIII", bhs, 16, itt, length, sn, self.ini.exp_stat_sn)
        bhs[32 : 32 + len(cdb)] = cdb
        self._send(bhs, immediate)
        if unsolicited_end > len(immediate):
            self.data_out(itt, RESERVED_TAG, len(immediate), unsolicited_end - len(immediate))

    def data_out(self, itt: int, ttt: int, offset: int, length: int, seg: int | None = None) -> None:
        data = self.pending[itt].data
        seg = min(seg or self.seg, self.seg)
        end, datasn = offset + length, 0
        while offset < end:
            n = min(seg, end - offset)
            bhs = bytearray(48)
            bhs[0] = Op.DATA_OUT
            bhs[1] = 0x80 if offset + n >= end else 0
            bhs[9] = 1
            struct.pack_into(">II", bhs, 16, itt, ttt)
            struct.pack_into(">I", bhs, 28, self.ini.exp_stat_sn)
            struct.pack_into(">II", bhs, 36, datasn, offset)
            self._send(bhs, data[offset : offset + n])
            datasn += 1
            offset += n

    def immediate(self, opcode: int, flags: int, *, lun: int = 0, rtt: int = RESERVED_TAG,
                  ref_cmd_sn: int = 0, payload: bytes = b"", tmf: str = "") -> int:
        itt = next(self.itts)
        if tmf:
            self.tmf[itt] = tmf
        bhs = bytearray(48)
        bhs[0] = opcode | 0x40
        bhs[1] = flags
        bhs[9] = lun
        struct.pack_into(">IIII", bhs, 16, itt, rtt, self.ini.cmd_sn, self.ini.exp_stat_sn)
        if opcode == Op.TASK_MGMT_REQ:
            struct.pack_into(">I", bhs, 32, ref_cmd_sn)
        if opcode == Op.NOP_OUT:
            self.pings[itt] = payload
        self._send(bhs, payload)
        return itt

    # -- receiving ---------------------------------------------------------------------
    def drain(self) -> None:
        out = self.conn.take_output()
        while not out and self.conn.input_held:
            self.conn.pump()
            out = self.conn.take_output()
        self.ini.reader.feed(b"".join(bytes(c) for c in out))
        while (pdu := self.ini.reader.next_pdu()) is not None:
            self.answer(pdu)

    def _status_sn(self, pdu: Pdu) -> None:
        stat_sn, exp_cmd, max_cmd = struct.unpack_from(">III", pdu.bhs, 24)
        assert stat_sn == self.exp_stat_sn, f"StatSN {stat_sn}, expected {self.exp_stat_sn}"
        self.exp_stat_sn = self.ini.exp_stat_sn = (stat_sn + 1) & 0xFFFFFFFF
        self._window(exp_cmd, max_cmd)

    def _window(self, exp_cmd: int, max_cmd: int) -> None:
        assert not sn_lt(exp_cmd, self.exp_cmd_sn), "ExpCmdSN went back"
        assert not sn_lt(max_cmd, self.max_cmd_sn), "MaxCmdSN went back"
        self.exp_cmd_sn, self.max_cmd_sn = exp_cmd, max_cmd

    def answer(self, pdu: Pdu) -> None:
        op = pdu.opcode
        if op in (Op.R2T, Op.DATA_IN) or (op == Op.NOP_IN and pdu.itt == RESERVED_TAG):
            exp_cmd, max_cmd = struct.unpack_from(">II", pdu.bhs, 28)
            self._window(exp_cmd, max_cmd)
        if op == Op.R2T:
            task = self.pending.get(pdu.itt)
            assert task is not None and task.kind == "write", f"R2T for ITT 0x{pdu.itt:x} not waiting for data"
            offset, length = struct.unpack_from(">II", pdu.bhs, 40)
            assert offset + length <= len(task.data)
            task.r2ts.append((pdu.u32(20), offset, length))
        elif op == Op.DATA_IN:
            task = self.pending.get(pdu.itt)
            assert task is not None and task.kind == "read", f"Data-In for ITT 0x{pdu.itt:x}"
            offset = pdu.u32(40)
            task.buf[offset : offset + len(pdu.data)] = pdu.data
            if pdu.flags & 0x01:
                self._status_sn(pdu)
                self.finish(task, pdu.bhs[3])
        elif op == Op.SCSI_RSP:
            task = self.pending.get(pdu.itt)
            assert task is not None, f"status for ITT 0x{pdu.itt:x}, not in flight (aborted or answered)"
            self._status_sn(pdu)
            self.finish(task, pdu.bhs[3])
        elif op == Op.NOP_IN:
            if pdu.itt == RESERVED_TAG:  # the target pings; the machine decides whether we answer
                self.m.target_pings.append((self, pdu.u32(20)))
                return
            self._status_sn(pdu)
            want = self.pings.pop(pdu.itt)
            assert pdu.data == want, "NOP-In did not echo the ping data"
        elif op == Op.TASK_MGMT_RSP:
            self._status_sn(pdu)
            self.tmf_answers.append((self.tmf.pop(pdu.itt), pdu.bhs[2]))
        elif op == Op.LOGOUT_RSP:
            self._status_sn(pdu)
            assert pdu.bhs[2] == 0
            self.logged_out = True
        elif op == Op.ASYNC_MSG:
            pass
        else:
            raise AssertionError(f"unexpected PDU opcode 0x{op:02x} (reason 0x{pdu.bhs[2]:02x})")

    def finish(self, task: Pending, status: int) -> None:
        del self.pending[task.itt]
        model = self.m.model
        if task.kind == "badlun":
            assert status == 2, "a command to a missing LUN got GOOD"
            return
        assert status == 0, f"{task.kind} status 0x{status:02x}"
        if task.kind == "write":
            model[task.lba * BS : task.lba * BS + len(task.data)] = task.data
        elif task.kind == "read":
            want = bytes(model[task.lba * BS : task.lba * BS + len(task.buf)])
            assert bytes(task.buf) == want, f"READ at LBA {task.lba} returned data the model does not hold"

    def forget(self, lun: int | None = None) -> None:
        """Tasks a TMF aborted: the target forgot them, so must we."""
        for itt in [t.itt for t in self.pending.values() if lun is None or lun == 1]:
            del self.pending[itt]


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.disk = FakeDisk(blocks=BLOCKS)
        self.node = make_node(self.disk)
        self.model = bytearray(BLOCKS * BS)
        self.link: Link | None = None
        self.config = InitiatorConfig()
        self.target_pings: list[tuple[Link, int]] = []
        self.gen = itertools.count(1)

    @initialize(immediate=st.booleans(), initial_r2t=st.booleans(), first_burst=st.sampled_from([512, 2048, 8192]),
                max_burst=st.sampled_from([512, 4096, 16384]), max_recv=st.sampled_from([512, 4096, 65536]))
    def login(self, immediate: bool, initial_r2t: bool, first_burst: int, max_burst: int, max_recv: int) -> None:
        self.config = InitiatorConfig(isid=ISID, immediate_data="Yes" if immediate else "No",
                                      initial_r2t="Yes" if initial_r2t else "No", first_burst=first_burst,
                                      max_burst=max(max_burst, first_burst), max_recv_dsl=max_recv)
        self.link = Link(self, self.config)

    def _live(self) -> bool:
        return self.link is not None and self.link.alive

    def _can_send(self) -> bool:
        return self._live() and self.link is not None and self.link.window_open() and len(self.link.pending) < 8

    def _free_range(self, lba: int, n: int) -> bool:
        """Writes in flight never overlap: their order of completion is the target's to choose."""
        assert self.link is not None
        return all(t.kind != "write" or t.lba + len(t.data) // BS <= lba or lba + n <= t.lba
                   for t in self.link.pending.values())

    def _pattern(self, lba: int, n: int) -> bytes:
        g = next(self.gen)
        return b"".join(struct.pack(">IIQ", lba + i, g, 0x5A5A).ljust(BS, bytes([g & 0xFF])) for i in range(n))

    @precondition(lambda self: self._can_send())
    @rule(lba=st.integers(0, BLOCKS - 1), n=st.integers(1, 24))
    def write(self, lba: int, n: int) -> None:
        n = min(n, BLOCKS - lba)
        assert self.link is not None
        if not self._free_range(lba, n):
            return
        cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, n, 0)
        self.link.command("write", 1, cdb, lba=lba, data=self._pattern(lba, n))

    @precondition(lambda self: self._can_send())
    @rule(lba=st.integers(0, BLOCKS - 1), n=st.integers(1, 24))
    def read(self, lba: int, n: int) -> None:
        n = min(n, BLOCKS - lba)
        assert self.link is not None
        if not self._free_range(lba, n):  # a read beside a write in flight may see either: skip
            return
        self.link.command("read", 1, struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0), lba=lba, read_len=n * BS)

    @precondition(lambda self: self._can_send())
    @rule()
    def missing_lun(self) -> None:
        assert self.link is not None
        self.link.command("badlun", 7, bytes(6))

    @precondition(lambda self: self._can_send())
    @rule()
    def cmdsn_out_of_order(self) -> None:
        """Two TEST UNIT READYs, the second CmdSN sent first: the target holds it for the first."""
        link = self.link
        assert link is not None
        if sn_lt(link.max_cmd_sn, (link.ini.cmd_sn + 1) & 0xFFFFFFFF):
            return
        first, second = next(link.itts), next(link.itts)
        sn = link.ini.cmd_sn
        link.ini.cmd_sn = (sn + 2) & 0xFFFFFFFF
        for itt, cmd_sn in ((second, sn + 1), (first, sn)):
            link.pending[itt] = Pending(itt, cmd_sn, "tur")
            bhs = bytearray(48)
            bhs[0], bhs[1], bhs[9] = Op.SCSI_CMD, 0x81, 1
            struct.pack_into(">IIII", bhs, 16, itt, 0, cmd_sn & 0xFFFFFFFF, link.ini.exp_stat_sn)
            link.ini.send_pdu(bhs)
            if itt == second:
                assert link.conn.take_output() == [], "a command answered before the CmdSN before it"
        link.drain()

    @precondition(lambda self: self._live() and any(t.r2ts for t in self.link.pending.values()))
    @rule(pick=st.integers(0, 7), seg=st.sampled_from([None, 512, 1024]))
    def answer_r2t(self, pick: int, seg: int | None) -> None:
        assert self.link is not None
        waiting = [t for t in self.link.pending.values() if t.r2ts]
        task = waiting[pick % len(waiting)]
        ttt, offset, length = task.r2ts.pop(0)
        self.link.data_out(task.itt, ttt, offset, length, seg)

    @precondition(lambda self: self._live())
    @rule(payload=st.binary(max_size=64))
    def nop_out(self, payload: bytes) -> None:
        assert self.link is not None
        self.link.immediate(Op.NOP_OUT, 0x80, payload=payload)

    @precondition(lambda self: self._live() and any(t.kind == "write" for t in self.link.pending.values()))
    @rule(pick=st.integers(0, 7))
    def abort_task(self, pick: int) -> None:
        link = self.link
        assert link is not None
        writes = [t for t in link.pending.values() if t.kind == "write"]
        task = writes[pick % len(writes)]
        link.immediate(Op.TASK_MGMT_REQ, 0x80 | TmfFunction.ABORT_TASK, lun=1, rtt=task.itt,
                                ref_cmd_sn=task.cmd_sn, tmf="abort")
        what, response = link.tmf_answers.pop()
        assert what == "abort" and response == TmfResponse.COMPLETE, f"ABORT TASK answered {response}"
        del link.pending[task.itt]

    @precondition(lambda self: self._live())
    @rule(function=st.sampled_from([TmfFunction.ABORT_TASK_SET, TmfFunction.LOGICAL_UNIT_RESET]))
    def task_set(self, function: TmfFunction) -> None:
        link = self.link
        assert link is not None
        link.immediate(Op.TASK_MGMT_REQ, 0x80 | function, lun=1, tmf=function.name)
        what, response = link.tmf_answers.pop()
        assert response == TmfResponse.COMPLETE, f"{what} answered {response}"
        link.forget(lun=1)  # everything in flight here is on LUN 1 (missing-LUN commands finish at once)

    @precondition(lambda self: self._live())
    @rule()
    def abort_unknown(self) -> None:
        """ABORT TASK of a tag never used, RefCmdSN long completed: FUNCTION COMPLETE is wrong here."""
        link = self.link
        assert link is not None
        long_ago = (link.ini.cmd_sn - 200) & 0xFFFFFFFF
        link.immediate(Op.TASK_MGMT_REQ, 0x80 | TmfFunction.ABORT_TASK, lun=1, rtt=0x7777,
                                ref_cmd_sn=long_ago, tmf="abort-unknown")
        assert link.tmf_answers.pop() == ("abort-unknown", TmfResponse.NO_TASK)

    @precondition(lambda self: self._live())
    @rule(seconds=st.floats(0.5, 12.0), answer=st.booleans())
    def time_passes(self, seconds: float, answer: bool) -> None:
        link = self.link
        assert link is not None
        self.clock.t += seconds
        link.conn.on_timer(self.clock.t)
        link.drain()
        while self.target_pings:
            pinger, ttt = self.target_pings.pop(0)
            if answer and pinger is link and link.alive:
                bhs = bytearray(48)
                bhs[0], bhs[1] = Op.NOP_OUT | 0x40, 0x80
                struct.pack_into(">IIII", bhs, 16, RESERVED_TAG, ttt, link.ini.cmd_sn, link.ini.exp_stat_sn)
                link._send(bhs)
        if not link.alive:
            assert link.conn.close_reason == "NOP-In timeout", link.conn.close_reason
            link.conn.connection_lost()
            self.link = Link(self, self.config)  # the initiator logs in again

    @precondition(lambda self: self._live())
    @rule()
    def logout(self) -> None:
        link = self.link
        assert link is not None
        if link.pending:  # a logout waits for the tasks; end them first
            self._finish_all()
        link.immediate(Op.LOGOUT_REQ, 0x80)
        assert link.logged_out and link.conn.close_after_flush
        link.conn.connection_lost()
        assert not self.node.sessions
        self.link = Link(self, self.config)

    @precondition(lambda self: self._live())
    @rule()
    def drop_connection(self) -> None:
        assert self.link is not None
        self.link.conn.connection_lost()
        assert not self.link.conn.tasks
        self.link = Link(self, self.config)

    @precondition(lambda self: self._live())
    @rule()
    def reinstate(self) -> None:
        """The same initiator and ISID log in on a new connection (after a crash or a drop)."""
        old = self.link
        assert old is not None
        new = Link(self, self.config)
        if not old.conn.closed:
            assert old.conn.close_after_flush, "the old connection survived its session's reinstatement"
            old.conn.connection_lost()
        assert len(self.node.sessions) == 1
        self.link = new

    @invariant()
    def bounded(self) -> None:
        link = self.link
        if link is None or not link.alive:
            return
        waiting = sum(1 for t in link.pending.values() if t.kind == "write")
        assert len(link.conn.tasks) <= waiting, (len(link.conn.tasks), waiting)
        assert not link.conn.out, "output left undrained"

    def _finish_all(self) -> None:
        link = self.link
        assert link is not None
        for _ in range(1000):
            waiting = [t for t in link.pending.values() if t.r2ts]
            if not waiting:
                break
            task = waiting[0]
            ttt, offset, length = task.r2ts.pop(0)
            link.data_out(task.itt, ttt, offset, length)
        assert not link.pending, f"tasks never answered: {sorted(t.kind for t in link.pending.values())}"

    def teardown(self) -> None:
        if self.link is None:
            return
        self._finish_all()
        self.link.command("read", 1, struct.pack(">BBIBHB", 0x28, 0, 0, 0, BLOCKS, 0), read_len=BLOCKS * BS)
        assert not self.link.pending
        assert bytes(self.disk.data) == bytes(self.model)


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
