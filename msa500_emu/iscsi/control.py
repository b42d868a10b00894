"""The full-feature-phase requests that carry no SCSI command: NOP-Out, Text, Logout (sans-I/O)."""

from __future__ import annotations

import struct
from typing import Protocol

from .constants import RESERVED_TAG, LogoutReason, LogoutResponse, Op, RejectReason
from .node import PortalInfo, Session, TargetNode
from .params import TARGET_MAX_RECV_DSL
from .pdu import Pdu
from .text import TextError, encode_text, parse_text


class ControlConnection(Protocol):
    """What these requests need from the connection they came on."""

    max_send: int  # the initiator's MaxRecvDataSegmentLength; a Text request may change it
    ping_ttt: int | None  # the target's NOP-In ping waiting for its answer

    @property
    def session(self) -> Session | None: ...

    @property
    def node(self) -> TargetNode: ...

    @property
    def portal(self) -> PortalInfo: ...

    def reject(self, pdu: Pdu, reason: RejectReason, why: str) -> None: ...

    def reply(self, bhs: bytearray, data: bytes | bytearray | memoryview = b"") -> None: ...

    def end(self, reason: str) -> None: ...


def nop_out(conn: ControlConnection, pdu: Pdu) -> None:
    """Answer a ping with its data, or take the answer to ours (RFC 7143 11.18, 11.19)."""
    itt = pdu.itt
    ttt = pdu.u32(20)
    s = conn.session
    assert s is not None
    if itt == RESERVED_TAG:
        if ttt == RESERVED_TAG and not pdu.immediate:
            conn.reject(pdu, RejectReason.PROTOCOL_ERROR, "NOP-Out with reserved ITT must be immediate")
        if ttt != RESERVED_TAG and ttt == conn.ping_ttt:
            conn.ping_ttt = None
        return
    if not pdu.immediate:
        cmd_sn = pdu.u32(24)
        if cmd_sn == s.exp_cmd_sn:
            s.exp_cmd_sn = (s.exp_cmd_sn + 1) & 0xFFFFFFFF
    bhs = bytearray(48)
    bhs[0] = Op.NOP_IN
    bhs[1] = 0x80
    bhs[8:16] = pdu.bhs[8:16]
    struct.pack_into(">II", bhs, 16, itt, RESERVED_TAG)
    conn.reply(bhs, pdu.data[: conn.max_send])


def text(conn: ControlConnection, pdu: Pdu) -> None:
    """SendTargets and MaxRecvDataSegmentLength in a single-PDU Text request."""
    s = conn.session
    assert s is not None
    try:
        pairs = parse_text(pdu.data)
    except TextError as exc:
        conn.reject(pdu, RejectReason.PROTOCOL_ERROR, str(exc))
        return
    if pdu.flags & 0x40:
        conn.reject(pdu, RejectReason.COMMAND_NOT_SUPPORTED, "multi-PDU text requests are not supported")
        return
    reply: list[tuple[str, str]] = []
    for key, value in pairs:
        if key == "SendTargets":
            if s.discovery or value != "All":
                reply.extend(conn.node.send_targets(conn.portal, value, s.initiator))
            else:
                reply.append(("SendTargets", "Reject"))
        elif key == "MaxRecvDataSegmentLength":
            try:
                n = int(value)
                if not 512 <= n < 1 << 24:
                    raise ValueError(value)
            except ValueError:
                reply.append((key, "Reject"))
                continue
            conn.max_send = n
            reply.append((key, str(TARGET_MAX_RECV_DSL)))
        else:
            reply.append((key, "NotUnderstood"))
    data = encode_text(reply)
    bhs = bytearray(48)
    bhs[0] = Op.TEXT_RSP
    bhs[1] = 0x80
    struct.pack_into(">II", bhs, 16, pdu.itt, RESERVED_TAG)
    conn.reply(bhs, data[: conn.max_send])


def logout(conn: ControlConnection, pdu: Pdu) -> None:
    """Close the session (one connection per session), or refuse recovery at ERL 0."""
    s = conn.session
    assert s is not None
    reason = pdu.flags & 0x7F
    response = LogoutResponse.SUCCESS
    if reason == LogoutReason.REMOVE_FOR_RECOVERY:
        response = LogoutResponse.RECOVERY_NOT_SUPPORTED
    # CLOSE_CONNECTION names a CID: with one connection per session, closing it ends the session.
    bhs = bytearray(48)
    bhs[0] = Op.LOGOUT_RSP
    bhs[1] = 0x80
    bhs[2] = response
    struct.pack_into(">I", bhs, 16, pdu.itt)
    struct.pack_into(">HH", bhs, 40, 0, 0)  # Time2Wait, Time2Retain
    conn.reply(bhs)
    if response == LogoutResponse.SUCCESS:
        conn.end("logout")
