"""The receiving half of a write: R2Ts and Data-Out of the commands waiting for their data, sans-I/O.

A command whose data-out did not all come with it waits here as a Task: it solicits its bursts
(MaxOutstandingR2T at a time, within the connection's write budget), checks each Data-Out against
its R2T or the unsolicited window, and runs once every byte is in. `Connection` is a DataOut: these
are its own methods (the per-PDU path calls them directly).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firmware_model.scsi.constants import Asc, SenseKey
from firmware_model.scsi.sense import fixed_sense
from firmware_model.scsi.types import DataDirection, Status

from .constants import RESERVED_TAG, Op, RejectReason
from .pdu import Pdu, u32

if TYPE_CHECKING:
    from collections.abc import Callable

    from .node import Session

# Data-out a connection may hold or have solicited (R2T) for its commands beyond the oldest
# one, which always gets its R2Ts so it can finish and free its buffer.
WRITE_BUDGET = 64 << 20
# A Data-Out PDU failed its data digest: at ErrorRecoveryLevel 0 the command fails with
# ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR.
_CRC_ERROR_SENSE = fixed_sense(SenseKey.ABORTED_COMMAND, *divmod(Asc.PROTOCOL_SERVICE_CRC_ERROR, 256))



@dataclass
class Task:
    """A SCSI command waiting for its data-out."""

    itt: int
    lun: int
    cdb: bytes
    cmd_pdu_bhs: bytes
    edtl: int
    direction: DataDirection
    attr: int
    buf: bytearray  # the data-out so far: it grows as data arrives, never ahead of it
    received: int = 0
    unsolicited_end: int = 0  # data below this offset arrives unsolicited
    next_r2t_offset: int = 0
    r2t_sn: int = 0
    outstanding: dict[int, list[int]] = field(default_factory=dict)  # TTT -> [offset, length, got, datasn]
    unsolicited_datasn: int = 0
    started: int = 0  # perf_counter_ns() at the command PDU: latency is what the host sees


class DataOut:
    """R2Ts and Data-Out for the tasks of one connection (a mixin of Connection)."""

    if TYPE_CHECKING:  # what the connection provides
        tasks: dict[int, Task]
        session: Session | None
        closed: bool
        out: list[bytes | bytearray | memoryview]
        wakeup: Callable[[], None]
        _starved: bool

        def reject(self, pdu: Pdu, reason: RejectReason, why: str) -> None: ...
        def _alloc_ttt(self) -> int: ...
        def _seq(self, bhs: bytearray, advance: bool = True) -> None: ...
        def _send(self, bhs: bytearray, data: bytes | bytearray | memoryview = b"") -> None: ...
        def _respond(self, itt: int, edtl: int, status: int, sense: bytes, data: bytes | bytearray | memoryview,
                     direction: DataDirection, wanted: int | None = None) -> None: ...
        def _run(self, itt: int, lun: int, cdb: bytes, bhs: bytes, edtl: int, direction: DataDirection,
                 attr: int, data: bytes | bytearray | memoryview, started: int) -> None: ...

    def _write_load(self) -> int:
        """Data-out held or solicited for the tasks of this connection, in bytes."""
        return sum(t.next_r2t_offset for t in self.tasks.values())

    def _issue_r2ts(self, task: Task) -> None:
        """Solicit the next bursts of `task`: MaxOutstandingR2T at a time, within the write budget.

        The oldest task always gets its R2Ts (so it finishes and frees its buffer); the others
        only while the connection holds or has solicited less than WRITE_BUDGET bytes.
        """
        p = self.session.params if self.session else None
        assert p is not None
        oldest = next(iter(self.tasks.values()), None) is task
        load = -1
        while len(task.outstanding) < p.max_outstanding_r2t and task.next_r2t_offset < task.edtl:
            offset = task.next_r2t_offset
            length = min(p.max_burst_length, task.edtl - offset)
            if not oldest:
                if load < 0:
                    load = self._write_load()
                if load + length > WRITE_BUDGET:
                    self._starved = True
                    return
                load += length
            task.next_r2t_offset += length
            ttt = self._alloc_ttt()
            task.outstanding[ttt] = [offset, length, 0, 0]
            bhs = bytearray(48)
            bhs[0] = Op.R2T
            bhs[1] = 0x80
            bhs[8:16] = task.cmd_pdu_bhs[8:16]
            struct.pack_into(">II", bhs, 16, task.itt, ttt)
            self._seq(bhs, advance=False)
            struct.pack_into(">III", bhs, 36, task.r2t_sn, offset, length)
            task.r2t_sn += 1
            self._send(bhs)

    def _data_out(self, pdu: Pdu) -> None:
        bhs = pdu.bhs
        itt = pdu.itt
        task = self.tasks.get(itt)
        if task is None:
            # Data for an aborted or unknown task: ignore (RFC 7143 11.7.5 says drop silently
            # when the task was aborted); a wholly unknown tag is a protocol error.
            if itt == RESERVED_TAG:
                self.reject(pdu, RejectReason.INVALID_PDU_FIELD, "Data-Out with reserved ITT")
            return
        ttt = u32(bhs, 20)
        datasn = u32(bhs, 36)
        offset = u32(bhs, 40)
        data = pdu.data
        end = offset + len(data)
        if end > task.edtl:
            self.reject(pdu, RejectReason.PROTOCOL_ERROR, "Data-Out beyond expected data length")
            return
        if ttt == RESERVED_TAG:
            if end > task.unsolicited_end:
                self.reject(pdu, RejectReason.PROTOCOL_ERROR, "unsolicited data beyond FirstBurstLength")
                return
            if datasn != task.unsolicited_datasn:
                want = task.unsolicited_datasn
                self.reject(pdu, RejectReason.PROTOCOL_ERROR, f"unsolicited DataSN {datasn}, expected {want}")
                return
            task.unsolicited_datasn += 1
        else:
            r2t = task.outstanding.get(ttt)
            if r2t is None:
                self.reject(pdu, RejectReason.INVALID_PDU_FIELD, f"Data-Out with unknown TTT 0x{ttt:08x}")
                return
            if offset < r2t[0] or end > r2t[0] + r2t[1]:
                self.reject(pdu, RejectReason.PROTOCOL_ERROR, "Data-Out outside its R2T")
                return
            if datasn != r2t[3]:
                self.reject(pdu, RejectReason.PROTOCOL_ERROR, f"DataSN {datasn}, expected {r2t[3]}")
                return
            r2t[3] += 1
            r2t[2] += len(data)
            if r2t[2] >= r2t[1] or bhs[1] & 0x80:
                del task.outstanding[ttt]
        buf = task.buf
        if offset > len(buf):  # a gap (PDUs out of order): the buffer still ends at the data
            buf.extend(bytes(offset - len(buf)))
        buf[offset:end] = data
        task.received += len(data)
        if task.received >= task.edtl and not task.outstanding and task.next_r2t_offset >= task.edtl:
            self._drop_task(task.itt)
            self._run(task.itt, task.lun, task.cdb, task.cmd_pdu_bhs, task.edtl, task.direction,
                      task.attr, task.buf, task.started)
        elif ttt != RESERVED_TAG:
            self._issue_r2ts(task)

    def _drop_task(self, itt: int) -> Task | None:
        """Forget a task (done, aborted, failed); tasks held back by the write budget go on."""
        task = self.tasks.pop(itt, None)
        if task is not None:
            self._resume_starved()
        return task

    def _resume_starved(self) -> None:
        if self._starved and self.session is not None and not self.closed:
            self._starved = False
            for other in list(self.tasks.values()):
                self._issue_r2ts(other)
            if self.out:
                self.wakeup()

    def _data_digest_error(self, pdu: Pdu) -> None:
        self.reject(pdu, RejectReason.DATA_DIGEST_ERROR, "data digest mismatch")
        if pdu.opcode == Op.DATA_OUT:
            task = self._drop_task(pdu.itt)
            if task is not None:  # ERL 0 cannot recover the data: fail the command
                self._respond(task.itt, task.edtl, Status.CHECK_CONDITION, _CRC_ERROR_SENSE, b"", task.direction)
