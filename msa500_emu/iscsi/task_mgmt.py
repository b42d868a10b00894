"""Task Management Function requests (RFC 7143 11.5, 11.6), sans-I/O.

The connection that received the request keeps its own tasks; the node aborts the other
sessions' tasks; the firmware resets logical units and the target.
"""

from __future__ import annotations

import logging
import struct
from typing import Protocol

from firmware_model.lun_address import decode_lun

from .constants import Op, RejectReason, TmfFunction, TmfResponse
from .node import Session, TargetNode
from .pdu import Pdu, u32

log = logging.getLogger("msa500_emu.iscsi")


class TaskSet(Protocol):
    """What task management needs from the connection the request came on."""

    @property
    def session(self) -> Session | None: ...

    @property
    def node(self) -> TargetNode: ...

    def abort_task(self, itt: int, ref_cmd_sn: int) -> bool:
        """ABORT TASK of this connection's task `itt`; False when there is no such task."""
        ...

    def abort_tasks(self, lun: int | None) -> None: ...

    def clear_tasks(self) -> None: ...

    def reject(self, pdu: Pdu, reason: RejectReason, why: str) -> None: ...

    def reply(self, bhs: bytearray, data: bytes | bytearray | memoryview = b"") -> None: ...


def task_management(conn: TaskSet, pdu: Pdu) -> None:
    """Carry out a TMF request and answer it."""
    s = conn.session
    assert s is not None
    bhs = pdu.bhs
    function = bhs[1] & 0x7F
    lun = decode_lun(bhs[8:16])
    rtt = u32(bhs, 20)
    ref_cmd_sn = u32(bhs, 32)
    response = TmfResponse.COMPLETE
    node = conn.node
    scsi = node.scsi
    if s.discovery:
        conn.reject(pdu, RejectReason.PROTOCOL_ERROR, "task management in a discovery session")
        return
    if function == TmfFunction.ABORT_TASK:
        if not conn.abort_task(rtt, ref_cmd_sn):
            response = TmfResponse.NO_TASK
    elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET):
        if lun not in scsi.luns:
            response = TmfResponse.NO_LUN
        else:
            conn.abort_tasks(lun)
            if function == TmfFunction.CLEAR_TASK_SET:
                node.abort_tasks(lun, except_=conn)
    elif function == TmfFunction.LOGICAL_UNIT_RESET:
        if lun not in scsi.luns:
            response = TmfResponse.NO_LUN
        else:
            conn.abort_tasks(lun)
            node.abort_tasks(lun, except_=conn)
            scsi.lun_reset(lun, s.nexus)
    elif function == TmfFunction.TARGET_WARM_RESET:
        conn.clear_tasks()
        node.abort_tasks(None, except_=conn)
        scsi.target_reset(False, s.nexus)
    elif function == TmfFunction.TARGET_COLD_RESET:
        conn.clear_tasks()
        scsi.target_reset(True, s.nexus)
        _respond(conn, pdu, response)
        log.warning("TARGET COLD RESET from %s: closing every session", s.initiator)
        node.cold_reset(s)
        return
    elif function == TmfFunction.CLEAR_ACA:
        response = TmfResponse.NOT_SUPPORTED
    elif function == TmfFunction.TASK_REASSIGN:
        response = TmfResponse.NO_REASSIGNMENT
    else:
        response = TmfResponse.REJECTED
    _respond(conn, pdu, response)


def _respond(conn: TaskSet, pdu: Pdu, response: TmfResponse) -> None:
    bhs = bytearray(48)
    bhs[0] = Op.TASK_MGMT_RSP
    bhs[1] = 0x80
    bhs[2] = response
    struct.pack_into(">I", bhs, 16, pdu.itt)
    conn.reply(bhs)
