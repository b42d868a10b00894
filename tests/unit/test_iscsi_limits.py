"""Per-connection bounds whatever the peer claims, the login timeout, and the portal's caps
(issue 12, item 6). The sans-I/O parts run on a virtual clock; the portal caps on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from msa500_emu.iscsi.connection import Connection
from msa500_emu.iscsi.constants import Op, RejectReason
from msa500_emu.iscsi.node import PortalInfo, TargetNode
from msa500_emu.iscsi.portal import Portal
from msa500_emu.iscsi.text import encode_text

from .iscsi_harness import TARGET, Clock, FakeDisk, connect, make_node, replies


def login_pdu(data: bytes, *, cont: bool = False, dsl: int | None = None) -> bytes:
    """A security-stage Login Request; `dsl` claims a data length other than the real one."""
    bhs = bytearray(48)
    bhs[0] = Op.LOGIN_REQ | 0x40
    bhs[1] = 0x40 if cont else 0x00  # C, or neither T nor C: stays in the security stage
    bhs[8:14] = bytes([0x80, 0, 0, 0, 0, 1])
    n = len(data) if dsl is None else dsl
    bhs[5:8] = n.to_bytes(3, "big")
    struct.pack_into(">I", bhs, 16, 0x1000)
    return bytes(bhs) + data + b"\0" * (-len(data) % 4)


# ------------------------------------------------------------------ bounds on what is buffered
def test_login_pdu_claiming_more_than_8192_bytes_is_refused_at_its_header() -> None:
    _ini, conn = connect(make_node())
    conn.receive(login_pdu(b"", dsl=0xFFFFFF)[:48])  # only the header: nothing else is awaited
    assert conn.close_after_flush and "exceeds 8192" in conn.close_reason
    assert conn.reader.buffered <= 48
    (rsp,) = replies(conn)  # answered before the close: a login response, INITIATOR ERROR
    assert rsp.opcode == Op.LOGIN_RSP and rsp.itt == 0x1000
    assert (rsp.bhs[36], rsp.bhs[37]) == (0x02, 0x00)


def test_full_feature_pdu_claiming_more_than_max_recv_dsl_is_refused() -> None:
    ini, conn = connect(make_node())
    ini.login(TARGET)
    assert conn.reader.max_data == 262144
    bhs = bytearray(48)
    bhs[0] = Op.NOP_OUT | 0x40
    bhs[5:8] = (262144 + 4).to_bytes(3, "big")
    conn.receive(bytes(bhs))
    assert conn.close_after_flush and "exceeds 262144" in conn.close_reason


def test_login_text_across_continuations_is_capped_with_out_of_resources() -> None:
    _ini, conn = connect(make_node())
    chunk = encode_text([("X-junk", "a" * 8000)])
    status = None
    for _ in range(12):  # 12 x 8 KiB > the 64 KiB a login may accumulate
        conn.receive(login_pdu(chunk, cont=True))
        got = replies(conn)
        if conn.close_after_flush:
            status = got[-1].bhs[36] << 8 | got[-1].bhs[37]
            break
    assert status == 0x0302  # OUT_OF_RESOURCES
    assert conn.login is not None and len(conn.login.pending_text) <= 65536 + 8192


def test_multi_pdu_text_request_is_rejected_and_the_session_goes_on() -> None:
    ini, conn = connect(make_node())
    ini.login(TARGET)
    bhs = bytearray(48)
    bhs[0] = Op.TEXT_REQ | 0x40
    bhs[1] = 0x40  # C: more text follows
    struct.pack_into(">III", bhs, 16, 0x77, 0xFFFFFFFF, ini.cmd_sn)
    data = encode_text([("SendTargets", "All")])
    bhs[5:8] = len(data).to_bytes(3, "big")
    conn.receive(bytes(bhs) + data + b"\0" * (-len(data) % 4))
    got = replies(conn)
    assert [p.opcode for p in got] == [Op.REJECT] and got[0].bhs[2] == RejectReason.COMMAND_NOT_SUPPORTED
    assert not conn.close_after_flush
    assert ini.nop(b"ping").data == b"ping"


def test_the_longest_ahs_a_header_can_claim_is_bounded_and_rejected() -> None:
    ini, conn = connect(make_node())
    ini.login(TARGET)
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD | 0x40
    bhs[1] = 0x80
    bhs[4] = 255  # TotalAHSLength: 1020 bytes, the most a header can claim
    bhs[9] = 1
    struct.pack_into(">III", bhs, 16, 0x55, 0, ini.cmd_sn)
    conn.receive(bytes(bhs) + b"\xff" * 1000)
    assert replies(conn) == [] and conn.reader.buffered == 1048  # waits for 20 more bytes, no more
    conn.receive(b"\xff" * 20)
    got = replies(conn)
    assert [p.opcode for p in got] == [Op.REJECT] and got[0].bhs[2] == RejectReason.INVALID_PDU_FIELD
    assert not conn.close_after_flush and ini.nop(b"ok").data == b"ok"


# ------------------------------------------------------------------------------ login timeout
def test_a_connection_that_does_not_log_in_is_closed_at_the_login_timeout() -> None:
    clock = Clock()
    node = make_node()
    node.config.login_timeout = 15.0
    conn = Connection(node, node.portals[1], clock)
    assert conn.next_deadline() == 15.0  # not the NOP interval: no pings before login
    clock.t = 14.9
    conn.on_timer(clock.t)
    assert not conn.close_after_flush
    clock.t = 15.0
    conn.on_timer(clock.t)
    assert conn.close_after_flush and conn.close_reason == "login timeout"


def test_a_half_done_login_is_closed_at_the_login_timeout_too() -> None:
    clock = Clock()
    node = make_node()
    conn = Connection(node, node.portals[1], clock)
    conn.receive(login_pdu(encode_text([("InitiatorName", "iqn.2026-12.test:slow"), ("SessionType", "Normal"),
                                        ("TargetName", TARGET)])))
    assert not conn.close_after_flush
    clock.t = 3.0
    conn.receive(b"\x43")  # a trickle of bytes does not extend the deadline
    clock.t = node.config.login_timeout
    conn.on_timer(clock.t)
    assert conn.close_after_flush and conn.close_reason == "login timeout"


def test_a_logged_in_session_is_not_touched_by_the_login_timeout() -> None:
    clock = Clock()
    node = make_node()
    ini, conn = connect(node, clock=clock)
    ini.login(TARGET)
    assert conn.next_deadline() == conn.last_rx + node.config.nop_interval
    clock.t = node.config.login_timeout + 1
    conn.on_timer(clock.t)
    assert not conn.close_after_flush  # a NOP-In ping instead
    assert [p.opcode for p in replies(conn)] == [Op.NOP_IN]


# ------------------------------------------------------------------------ caps at accept
async def _portal_run(node: TargetNode, n: int) -> tuple[int, int, Portal]:
    """Open n idle connections to a portal; return (closed by the target, still open)."""
    portal = Portal(node, node.portals[1])
    await portal.start()
    conns = [await asyncio.open_connection("127.0.0.1", portal.info.tcp_port) for _ in range(n)]
    await asyncio.sleep(0)
    closed = 0
    for reader, _ in conns:
        try:
            if await asyncio.wait_for(reader.read(1), timeout=0.3) == b"":
                closed += 1
        except TimeoutError:
            pass
    for _, writer in conns:
        writer.close()
    await portal.stop()
    return closed, n - closed, portal


def _loopback_node() -> TargetNode:
    node = make_node(FakeDisk())
    node.portals = {1: PortalInfo(1, "127.0.0.1", 0)}
    return node


def test_connections_beyond_the_per_address_cap_are_closed_at_accept(caplog: pytest.LogCaptureFixture) -> None:
    node = _loopback_node()
    node.config.max_connections_per_address = 5
    caplog.set_level(logging.WARNING, logger="msa500_emu.iscsi")
    closed, open_, portal = asyncio.run(_portal_run(node, 9))
    assert (closed, open_) == (4, 5) and portal.refused == 4
    lines = [r.getMessage() for r in caplog.records if "refusing a connection" in r.getMessage()]
    assert len(lines) <= 2 and "max_connections_per_address 5" in lines[0]  # one line, then a count


def test_connections_beyond_the_per_portal_cap_are_closed_at_accept() -> None:
    node = _loopback_node()
    node.config.max_connections = 3
    closed, open_, portal = asyncio.run(_portal_run(node, 7))
    assert (closed, open_) == (4, 3) and portal.refused == 4
    assert portal.unlogged == {} and not portal.connections


def test_the_login_timeout_closes_idle_connections_on_a_real_portal(caplog: pytest.LogCaptureFixture) -> None:
    node = _loopback_node()
    node.config.login_timeout = 0.2

    async def run() -> tuple[int, Portal]:
        portal = Portal(node, node.portals[1])
        await portal.start()
        conns = [await asyncio.open_connection("127.0.0.1", portal.info.tcp_port) for _ in range(20)]
        closed = 0
        for reader, _ in conns:
            if await asyncio.wait_for(reader.read(1), timeout=30) == b"":
                closed += 1
        await portal.stop()
        return closed, portal

    caplog.set_level(logging.WARNING, logger="msa500_emu.iscsi")
    closed, portal = asyncio.run(run())
    assert closed == 20 and not portal.connections and portal.unlogged == {}
    lines = [r.getMessage() for r in caplog.records if "no login within" in r.getMessage()]
    assert 1 <= len(lines) <= 2, lines
