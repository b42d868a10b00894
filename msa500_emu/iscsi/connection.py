"""One iSCSI connection as a sans-I/O state machine: bytes in, bytes out.

The portal feeds received bytes to `receive()` and writes what `take_output()` returns;
it calls `on_timer(now)` at `next_deadline()`. SCSI commands are executed synchronously
through the node's firmware once their data-out has arrived. This module holds the
per-command path (CmdSN order, data-out and R2Ts, execution); the responses are built by
`ResponseWriter`, the rarer requests handled in `task_mgmt` and `control`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
from collections.abc import Callable
from time import perf_counter_ns

from firmware_model.lun_address import decode_lun
from firmware_model.scsi.injection import HeldResult
from firmware_model.scsi.stepped import Stepped
from firmware_model.scsi.types import DataDirection, ScsiRequest, ScsiResult, Status

from .constants import BHS_LEN, RESERVED_TAG, LoginStatus, Op, RejectReason
from .control import logout, nop_out, text
from .data_out import DataOut, Task
from .login import LOGIN_MAX_DATA, LoginState
from .node import PortalInfo, TargetNode, sn_lt
from .params import TARGET_MAX_RECV_DSL
from .pdu import FramingError, Pdu, PduReader, encode, extended_cdb, u32
from .repeat_log import RepeatLog
from .response import ResponseWriter
from .stepping import Running, Stepping
from .task_mgmt import task_management

log = logging.getLogger("msa500_emu.iscsi")

# Back-pressure: no new PDU is taken from a connection while this much of its output waits
# (in the connection or in the transport's buffer); the shell resumes it below the low mark.
OUTPUT_HIGH_WATER = 4 << 20
OUTPUT_LOW_WATER = 1 << 20
__all__ = ["OUTPUT_HIGH_WATER", "OUTPUT_LOW_WATER", "Connection", "decode_lun", "sn_lt"]


class Connection(DataOut, Stepping, ResponseWriter):
    """The target side of one TCP connection: login, then one session's full feature phase."""

    def __init__(self, node: TargetNode, portal: PortalInfo, now: Callable[[], float]) -> None:
        super().__init__()
        self.node = node
        self.portal = portal
        self._now = now
        # During login the initiator may send 8192 bytes per PDU (RFC 7143 13.12); the full
        # MaxRecvDataSegmentLength applies once the session is up.
        self.reader = PduReader(max_data=LOGIN_MAX_DATA)
        self.login: LoginState | None = LoginState(node, portal)
        self.login_deadline = now() + node.config.login_timeout
        self.closed = False
        self.close_reason = ""
        self.close_after_flush = False
        self.wakeup: Callable[[], None] = lambda: None
        self.tasks: dict[int, Task] = {}
        self.held: dict[int, Pdu] = {}  # out-of-order commands by CmdSN
        self.skip_sns: set[int] = set()  # CmdSNs aborted before their command arrived
        # Commands an injected TIMEOUT holds unanswered (ITT -> LUN), until ABORT TASK, a reset or the end.
        self.stalled: dict[int, int] = {}
        # Responses held back by injected latency: (due, order, send). StatSN is assigned
        # when a response is built, so held responses never disturb StatSN order.
        self.deferred: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.next_ttt = 1
        self.last_rx = now()
        self.ping_ttt: int | None = None
        self.ping_sent_at = 0.0
        self.paused = False  # set by the shell while the transport's buffer is above its high water
        self.input_held = False  # PDUs wait in the reader because the output backed up
        self._starved = False  # a task waits for R2Ts until the write budget frees up
        self.repeats = RepeatLog(now)

    # -- shell interface --------------------------------------------------------------
    def receive(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.last_rx = self._now()
        self.reader.feed(data)
        self.pump()

    def pump(self) -> None:
        """Handle the PDUs received so far, stopping while the output is backed up.

        Nothing new is taken while `paused` (the shell's transport is above its high water)
        or while this connection holds OUTPUT_HIGH_WATER bytes the shell has not taken yet:
        the rest waits in the reader (`input_held`), and the shell stops reading the socket,
        so the initiator's TCP window closes instead of the process's memory growing.
        """
        self.input_held = False
        while not self.closed and not self.close_after_flush:
            if self.paused or self.out_bytes >= OUTPUT_HIGH_WATER:
                self.input_held = self.reader.buffered >= BHS_LEN
                return
            try:
                pdu = self.reader.next_pdu()
            except FramingError as exc:
                if not self._refuse_login(str(exc)):
                    self.repeats.warning(("framing",), "closing a connection on port %d%s: framing error: %s",
                                         self.portal.port, self.repeats.where, exc)
                self.end(f"framing error: {exc}")
                return
            if pdu is None:
                return
            try:
                self._dispatch(pdu)
            except Exception:  # never let one PDU take the process down
                log.exception("internal error handling opcode 0x%02x; closing connection", pdu.opcode)
                self.end("internal error")
                return

    def take_output(self) -> list[bytes | bytearray | memoryview]:
        out, self.out = self.out, []
        self.out_bytes = 0
        return out

    def output_drained(self) -> None:
        """The shell's transport went below its low water: the initiator reads, so it is alive."""
        self.last_rx = max(self.last_rx, self._now())

    @property
    def busy(self) -> int:
        """Commands received but not finished: waiting for data-out, or for their response."""
        return len(self.tasks) + len(self.deferred) + len(self.stalled) + (self.stepping is not None)

    def connection_lost(self) -> None:
        self.repeats.flush()
        if self.closed and not self.session:
            return
        self.closed = True
        s = self.session
        self.tasks.clear()
        self.stalled.clear()
        self._stop_stepping()
        if s is not None and s.connection is self:
            s.connection = None
            self.node.end_session(s, self.close_reason or "connection closed by initiator")

    def request_close(self, reason: str) -> None:
        """Asked from outside (reinstatement, reset, shutdown): stop and let the shell close."""
        if not self.closed:
            self.close_reason = reason
            self.close_after_flush = True
            self.tasks.clear()
            self.stalled.clear()
            self._stop_stepping()
            self.wakeup()

    def next_deadline(self) -> float:
        cfg = self.node.config
        if self.login is not None:
            return self.login_deadline
        if self.ping_ttt is not None:
            due = self.ping_sent_at + cfg.nop_timeout
        else:
            due = self.last_rx + cfg.nop_interval
        if self.deferred:
            due = min(due, self.deferred[0][0])
        return due

    def on_timer(self, now: float) -> None:
        if self.closed or self.close_after_flush:
            return
        if self.session is None:
            if self.login is not None and now >= self.login_deadline:
                self.close_reason = "login timeout"
                self.close_after_flush = True
            return
        self.repeats.flush()
        while self.deferred and self.deferred[0][0] <= now:
            heapq.heappop(self.deferred)[2]()
        cfg = self.node.config
        if self.ping_ttt is not None:
            if now >= self.ping_sent_at + cfg.nop_timeout and self.last_rx <= self.ping_sent_at:
                log.warning(
                    "initiator %s on port %d did not answer NOP-In for %.0fs: dropping it",
                    self.session.initiator, self.portal.port, cfg.nop_timeout,
                )
                self.end("NOP-In timeout")
            elif self.last_rx > self.ping_sent_at:
                self.ping_ttt = None
            return
        if now >= self.last_rx + cfg.nop_interval:
            self.ping_ttt = self._alloc_ttt()
            self.ping_sent_at = now
            bhs = bytearray(48)
            bhs[0] = Op.NOP_IN
            bhs[1] = 0x80
            bhs[8:16] = bytes(8)
            struct.pack_into(">II", bhs, 16, RESERVED_TAG, self.ping_ttt)
            self._seq(bhs, advance=False)
            self._send(bhs)

    # -- helpers ----------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """Take no more PDUs; the shell closes the connection once the output is written."""
        self.close_reason = reason
        self.close_after_flush = True
        self.wakeup()

    def _alloc_ttt(self) -> int:
        ttt = self.next_ttt
        self.next_ttt = (self.next_ttt % 0xFFFFFFFE) + 1
        return ttt

    def reject(self, pdu: Pdu, reason: RejectReason, why: str) -> None:
        self.repeats.warning(("reject", int(reason), pdu.opcode),
                             "reject (0x%02x) of opcode 0x%02x: %s", int(reason), pdu.opcode, why)
        bhs = bytearray(48)
        bhs[0] = Op.REJECT
        bhs[1] = 0x80
        bhs[2] = reason
        struct.pack_into(">I", bhs, 16, RESERVED_TAG)
        if self.session is None:
            self.end("reject during login")
            return
        self.reply(bhs, pdu.bhs)

    # -- dispatch ---------------------------------------------------------------------
    def _dispatch(self, pdu: Pdu) -> None:
        if self.login is not None:
            self._login(pdu)
            return
        if not pdu.data_digest_ok:
            self._data_digest_error(pdu)
            return
        op = pdu.opcode
        if op == Op.SCSI_CMD:
            self._ordered(pdu)
        elif op == Op.DATA_OUT:
            self._data_out(pdu)
        elif op == Op.NOP_OUT:
            nop_out(self, pdu)
        elif op in (Op.TASK_MGMT_REQ, Op.TEXT_REQ, Op.LOGOUT_REQ):
            self._ordered(pdu)
        elif op == Op.SNACK:
            self.reject(pdu, RejectReason.COMMAND_NOT_SUPPORTED, "SNACK at ErrorRecoveryLevel 0")
        elif op == Op.LOGIN_REQ:
            self.reject(pdu, RejectReason.PROTOCOL_ERROR, "login request in full feature phase")
        else:
            self.reject(pdu, RejectReason.COMMAND_NOT_SUPPORTED, f"unknown opcode 0x{op:02x}")

    def _refuse_login(self, why: str) -> bool:
        """A login request too long to take still gets its answer: INITIATOR ERROR (0x0200)."""
        head = self.reader.head()
        if self.login is None or len(head) < BHS_LEN or head[0] & 0x3F != Op.LOGIN_REQ:
            return False
        bhs = self.login.refuse(Pdu(head, b"", b""), self.stat_sn, LoginStatus.INITIATOR_ERROR, why)
        self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF
        self.out.extend(encode(bhs))
        return True

    def _login(self, pdu: Pdu) -> None:
        login = self.login
        assert login is not None
        result = login.handle(pdu, self.stat_sn)
        if result.silent:  # a path fault: the transport is closed, nothing is answered
            self.end("login dropped")
            return
        self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF
        self.out.extend(encode(result.bhs, result.data))
        if result.failed:
            self.end("login failed")
            return
        if result.complete and result.session is not None:
            s = result.session
            s.connection = self
            self.session = s
            self.login = None
            self.repeats.where = f" from {s.initiator} on port {self.portal.port}"
            p = s.params
            self.hd, self.dd = p.header_digest, p.data_digest
            self.reader.header_digest, self.reader.data_digest = self.hd, self.dd
            self.reader.max_data = TARGET_MAX_RECV_DSL
            self.max_send = p.initiator_max_recv_dsl

    def _ordered(self, pdu: Pdu) -> None:
        """CmdSN ordering: immediate PDUs run now, others in CmdSN order inside the window."""
        s = self.session
        assert s is not None
        cmd_sn = pdu.u32(24)
        if pdu.immediate:
            self._execute_ordered(pdu)
            return
        if cmd_sn == s.exp_cmd_sn and not sn_lt(s.max_cmd_sn, cmd_sn) and self.stepping is None:
            s.exp_cmd_sn = (s.exp_cmd_sn + 1) & 0xFFFFFFFF  # (not when the window is shut)
            self._execute_ordered(pdu)
            self._drain_held()
            return
        if not sn_lt(cmd_sn, s.exp_cmd_sn) and not sn_lt(s.max_cmd_sn, cmd_sn):  # later, or behind a stepping one
            if len(self.held) < self.node.config.cmd_window:
                self.held[cmd_sn] = pdu
            return
        self.repeats.warning(
            ("window", pdu.opcode),
            "dropping opcode 0x%02x with CmdSN %d outside window %d..%d",
            pdu.opcode, cmd_sn, s.exp_cmd_sn, s.max_cmd_sn,
        )

    def _drain_held(self) -> None:
        """The commands held for CmdSN order that can run now (none while one runs in steps)."""
        s = self.session
        assert s is not None
        while not self.closed and self.stepping is None:
            if s.exp_cmd_sn in self.skip_sns:  # aborted before it arrived: counts as received
                self.skip_sns.discard(s.exp_cmd_sn)
                self.held.pop(s.exp_cmd_sn, None)
            elif s.exp_cmd_sn in self.held:
                self._execute_ordered(self.held.pop(s.exp_cmd_sn))
            else:
                break
            s.exp_cmd_sn = (s.exp_cmd_sn + 1) & 0xFFFFFFFF

    def _execute_ordered(self, pdu: Pdu) -> None:
        op = pdu.opcode
        if op == Op.SCSI_CMD:
            self._scsi_command(pdu)
        elif op == Op.TASK_MGMT_REQ:
            task_management(self, pdu)
        elif op == Op.TEXT_REQ:
            text(self, pdu)
        elif op == Op.LOGOUT_REQ:
            logout(self, pdu)

    # -- SCSI ---------------------------------------------------------------------------
    def _scsi_command(self, pdu: Pdu) -> None:
        s = self.session
        assert s is not None
        if s.discovery:
            self.reject(pdu, RejectReason.PROTOCOL_ERROR, "SCSI command in a discovery session")
            return
        bhs = pdu.bhs
        flags = bhs[1]
        itt = pdu.itt
        if itt == RESERVED_TAG:
            self.reject(pdu, RejectReason.INVALID_PDU_FIELD, "SCSI command with reserved ITT")
            return
        if itt in self.tasks or itt in self.stalled:
            self.reject(pdu, RejectReason.TASK_IN_PROGRESS, f"ITT 0x{itt:08x} already in use")
            return
        edtl = u32(bhs, 20)
        cdb = bhs[32:48]
        if pdu.ahs:
            ext = extended_cdb(pdu.ahs, cdb)
            if ext is None:
                self.reject(pdu, RejectReason.INVALID_PDU_FIELD, "unsupported AHS")
                return
            cdb = ext
        lun = decode_lun(bhs[8:16])
        read, write = bool(flags & 0x40), bool(flags & 0x20)
        direction = DataDirection.WRITE if write else DataDirection.READ if read else DataDirection.NONE
        if read and write:
            self.reject(pdu, RejectReason.INVALID_PDU_FIELD, "bidirectional commands not supported")
            return
        data = pdu.data
        p = s.params
        if data and (not write or not p.immediate_data):
            why = "immediate data without W bit" if not write else "ImmediateData=No"
            self.reject(pdu, RejectReason.PROTOCOL_ERROR, why)
            return
        if pdu.immediate and self.busy >= self.node.config.cmd_window:
            # Immediate commands bypass the CmdSN window; the task set is full all the same.
            self.repeats.warning(("task set full", lun), "TASK SET FULL for an immediate command on LUN %d "
                                 "(%d commands in progress)", lun, self.busy)
            self._respond(itt, edtl, Status.TASK_SET_FULL, b"", b"", direction, 0)
            return
        started = perf_counter_ns()
        if not write or edtl == 0:
            self._run(itt, lun, cdb, bhs, edtl, direction, flags & 7, b"", started)
            return
        if len(data) > edtl or len(data) > p.first_burst_length:
            self.reject(pdu, RejectReason.PROTOCOL_ERROR, "immediate data beyond EDTL/FirstBurstLength")
            return
        refusal = self.node.scsi.check_data_out(ScsiRequest(s.nexus, lun, cdb, b"", edtl, direction, flags & 7))
        if refusal is not None:  # more data-out than the unit could ever take: none is solicited
            self.repeats.warning(("data-out limit", lun), "refusing a command with %d bytes of data-out "
                                 "on LUN %d (beyond its maximum transfer length)", edtl, lun)
            self._respond(itt, edtl, refusal.status, refusal.sense, b"", direction, 0)
            return
        if len(data) == edtl:
            self._run(itt, lun, cdb, bhs, edtl, direction, flags & 7, data, started)
            return
        task = Task(itt, lun, cdb, bhs, edtl, direction, flags & 7, bytearray(data), started=started)
        task.received = len(data)
        if flags & 0x80 or p.initial_r2t:  # F: no unsolicited Data-Out follows
            task.unsolicited_end = len(data)
        else:
            task.unsolicited_end = min(p.first_burst_length, edtl)
        task.next_r2t_offset = task.unsolicited_end
        self.tasks[itt] = task
        self._issue_r2ts(task)

    def _run(self, itt: int, lun: int, cdb: bytes, bhs: bytes, edtl: int, direction: DataDirection,
             attr: int, data: bytes | bytearray | memoryview, started: int) -> None:
        s = self.session
        assert s is not None
        req = ScsiRequest(s.nexus, lun, cdb, data, edtl, direction, attr, may_step=self.can_step)
        result = self.node.scsi.execute(req)
        if isinstance(result, Stepped):  # a long command: stepped by the shell (stepping.py)
            self._start_stepping(Running(itt, lun, req, result, edtl, direction, started))
            return
        wanted = req.spdtl if direction == DataDirection.WRITE else None
        self._answer(itt, lun, result, edtl, direction, wanted, started)

    def _answer(self, itt: int, lun: int, result: ScsiResult, edtl: int, direction: DataDirection,
                wanted: int | None, started: int) -> None:
        """A command's response: now, or held back (injected TIMEOUT/DELAY, drive latency)."""
        delay = self.node.lun_delay.get(lun) if self.node.lun_delay else None
        if isinstance(result, HeldResult):  # an injected TIMEOUT (never answered) or DELAY
            if result.hold_s is None:
                self.stalled[itt] = lun
                return
            delay = max(delay or 0.0, result.hold_s)
        stats = self.node.stats
        if delay:
            def send() -> None:
                self._respond(itt, edtl, result.status, result.sense, result.data, direction, wanted)
                if stats is not None:
                    stats.observe(lun, perf_counter_ns() - started)

            heapq.heappush(self.deferred, (self._now() + delay, next(self._order), send))
            return
        self._respond(itt, edtl, result.status, result.sense, result.data, direction, wanted)
        if stats is not None:
            stats.observe(lun, perf_counter_ns() - started)

    # -- asked by task management and the node ----------------------------------------
    def abort_task(self, itt: int, ref_cmd_sn: int) -> bool:
        """ABORT TASK (RFC 7143 11.5.1); False when the task does not exist.

        A task we hold is aborted; one held back for CmdSN order is dropped and its CmdSN
        counted as received; an unknown task whose RefCmdSN is inside the window is taken as
        received-and-aborted; outside it (say, a task that already completed), it does not exist.
        """
        s = self.session
        assert s is not None
        if itt in self.tasks:
            self._drop_task(itt)
        elif self._stop_stepping(itt=itt):
            pass
        elif itt in self.stalled:
            del self.stalled[itt]
        elif itt in {p.itt for p in self.held.values()}:
            self.held = {k: v for k, v in self.held.items() if v.itt != itt}
            self.skip_sns.add(ref_cmd_sn)
        elif not sn_lt(ref_cmd_sn, s.exp_cmd_sn) and not sn_lt(s.max_cmd_sn, ref_cmd_sn):
            self.skip_sns.add(ref_cmd_sn)
        else:
            return False
        return True

    def clear_tasks(self) -> None:
        """Forget every task (target reset) without soliciting more data-out."""
        self.tasks.clear()
        self.stalled.clear()
        self._stop_stepping()

    def abort_tasks(self, lun: int | None) -> None:
        """Forget the tasks of `lun` (None: all), every one of them before any other gets an R2T."""
        for itt in [t.itt for t in self.tasks.values() if lun is None or t.lun == lun]:
            del self.tasks[itt]
        for itt in [i for i, at in self.stalled.items() if lun is None or at == lun]:
            del self.stalled[itt]
        self._stop_stepping(lun=lun)
        self._resume_starved()
