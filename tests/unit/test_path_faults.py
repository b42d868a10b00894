"""Port and path faults on the asyncio portals (loopback, ephemeral ports, a stand-in firmware):
down and up, reset, black hole, delay, flap, one initiator only, forced new ISID."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from firmware_model.events import EventCode
from msa500_emu.iscsi.connection import Connection
from msa500_emu.iscsi.constants import LoginStatus, Op
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig, LoginError
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.iscsi.path_faults import PathFaults
from msa500_emu.iscsi.portal import Portal

from .iscsi_harness import TARGET, Clock, FakeDisk, LoopSocket

WAIT = 10.0  # every wait here is bounded by this (a generous bound, not a measured duration)
A, B = "iqn.2026-12.lab:a", "iqn.2026-12.lab:b"


class Shelf:
    def __init__(self, node: TargetNode, portals: list[Portal], faults: PathFaults,
                 events: list[tuple[EventCode, str]]) -> None:
        self.node, self.portals, self.faults, self.events = node, portals, faults, events

    def port(self, n: int) -> int:
        return self.portals[n - 1].info.tcp_port


@pytest.fixture
async def shelf() -> AsyncIterator[Shelf]:
    cfg = NodeConfig(target_name=TARGET, nop_interval=30, nop_timeout=60)
    node = TargetNode(cfg, FakeDisk(), [PortalInfo(1, "127.0.0.1", 0), PortalInfo(2, "127.0.0.1", 0)])
    portals = [Portal(node, info) for info in node.portals.values()]
    for p in portals:
        await p.start()
    events: list[tuple[EventCode, str]] = []
    tasks: list[asyncio.Task[None]] = []
    faults = PathFaults(node, portals, lambda code, text: events.append((code, text)),
                        lambda work: tasks.append(asyncio.ensure_future(work)))
    yield Shelf(node, portals, faults, events)
    for t in tasks:
        await t
    for p in portals:
        await p.stop()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


def login(port: int, name: str = A, isid: bytes = b"\x80\x12\x34\x56\x00\x01", timeout: float = WAIT) -> Initiator:
    ini = Initiator("127.0.0.1", port, InitiatorConfig(initiator_name=name, isid=isid), timeout=timeout)
    try:
        ini.login(TARGET)
    except BaseException:
        ini.close()
        raise
    return ini


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), WAIT + 5)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def silent_close(ini: Initiator) -> bool:
    """True when the connection ends (EOF or RST) without one PDU."""
    try:
        ini.nop(b"x")
    except (ConnectionError, OSError):
        return True
    return False


async def test_down_refuses_connects_and_up_listens_on_the_same_port(shelf: Shelf) -> None:
    ini = await in_thread(login, shelf.port(1))
    tcp = shelf.port(1)
    shelf.faults.fault_port(1, "down")
    await settle()
    assert await in_thread(refused, tcp)
    assert await in_thread(silent_close, ini)  # its session was reset
    assert not shelf.node.sessions
    assert [(r["port"], r["fault"], r["initiator"]) for r in shelf.faults.rows()] == [(1, "down", None)]
    (await in_thread(login, shelf.port(2))).close()  # the other port is untouched
    shelf.faults.fault_port(1, "up")
    await settle()
    assert shelf.port(1) == tcp
    (await in_thread(login, tcp)).close()
    assert [c for c, _ in shelf.events] == [EventCode.PORT_FAULT, EventCode.PORT_FAULT_CLEARED]


async def test_reset_drops_every_connection_once_and_keeps_listening(shelf: Shelf) -> None:
    a = await in_thread(login, shelf.port(1), A)
    b = await in_thread(login, shelf.port(1), B)
    result = shelf.faults.fault_port(1, "reset")
    assert result["connections_dropped"] == 2
    assert await in_thread(silent_close, a) and await in_thread(silent_close, b)
    assert shelf.faults.rows() == []  # a one-shot: nothing stays
    again = await in_thread(login, shelf.port(1), A)
    assert (await in_thread(again.nop, b"ok")).data == b"ok"
    again.close()


async def test_blackhole_answers_nothing_then_carries_on(shelf: Shelf) -> None:
    ini = await in_thread(login, shelf.port(1))
    shelf.faults.fault_port(1, "blackhole")
    ini.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        await in_thread(ini.nop, b"held")
    fresh = socket.create_connection(("127.0.0.1", shelf.port(1)), timeout=WAIT)  # accepted...
    late = Initiator(config=InitiatorConfig(initiator_name=B), sock=fresh)
    fresh.settimeout(0.5)
    with pytest.raises(TimeoutError):
        await in_thread(late.login, TARGET)  # ...and never answered
    assert shelf.node.sessions  # no RST, no session ended
    shelf.faults.fault_port(1, "clear")
    ini.sock.settimeout(WAIT)
    pdu = await in_thread(ini.recv_pdu)  # what was sent during the black hole is answered now
    assert pdu.opcode == Op.NOP_IN and pdu.data == b"held"
    assert (await in_thread(ini.nop, b"after")).data == b"after"
    ini.close()
    late.close()


async def test_delay_holds_every_response(shelf: Shelf) -> None:
    ini = await in_thread(login, shelf.port(2))
    shelf.faults.fault_port(2, "delay", ms=300)
    t0 = time.monotonic()
    assert (await in_thread(ini.nop, b"slow")).data == b"slow"
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert await in_thread(ini.read, 1, 0, 8) == bytes(4096)
    assert time.monotonic() - t0 >= 0.3
    shelf.faults.fault_port(2, "clear")
    assert shelf.faults.rows() == []
    assert (await in_thread(ini.nop, b"fast")).data == b"fast"
    ini.close()


async def test_down_for_one_initiator_only(shelf: Shelf) -> None:
    a = await in_thread(login, shelf.port(1), A)
    b = await in_thread(login, shelf.port(1), B)
    shelf.faults.fault_port(1, "down", initiator=A.upper())
    assert await in_thread(silent_close, a)
    assert (await in_thread(b.nop, b"b")).data == b"b"  # the other host is untouched
    with pytest.raises((ConnectionError, OSError)):  # A's login: closed at the transport, no answer
        await in_thread(login, shelf.port(1), A)
    (await in_thread(login, shelf.port(2), A)).close()  # the other port is not down for it
    shelf.faults.fault_port(1, "up", initiator=A)
    (await in_thread(login, shelf.port(1), A)).close()
    b.close()


async def test_delay_and_blackhole_for_one_initiator(shelf: Shelf) -> None:
    b = await in_thread(login, shelf.port(1), B)
    shelf.faults.fault_port(1, "blackhole", initiator=A)
    shelf.faults.fault_port(1, "delay", initiator=B, ms=200)
    sock = socket.create_connection(("127.0.0.1", shelf.port(1)), timeout=0.5)
    a = Initiator(config=InitiatorConfig(initiator_name=A), sock=sock)
    with pytest.raises(TimeoutError):  # A's login is read (that names it) but never answered
        await in_thread(a.login, TARGET)
    t0 = time.monotonic()
    assert (await in_thread(b.nop, b"b")).data == b"b"
    assert time.monotonic() - t0 >= 0.2
    assert {r["fault"] for r in shelf.faults.rows()} == {"blackhole", "delay"}
    shelf.faults.fault_port(1, "clear", initiator=A)
    sock.settimeout(WAIT)
    pdu = await in_thread(a.recv_pdu)  # A's login goes on where it stopped
    assert pdu.opcode == Op.LOGIN_RSP
    assert [r["fault"] for r in shelf.faults.rows()] == ["delay"]
    a.close()
    b.close()


async def test_flap_goes_down_and_up_until_clear(shelf: Shelf) -> None:
    tcp = shelf.port(2)
    shelf.faults.fault_port(2, "flap", seconds=1)
    seen_down, down = False, False
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        down = await in_thread(refused, tcp)
        seen_down = seen_down or down
        if seen_down and not down:
            break
        await asyncio.sleep(0.1)
    assert seen_down and not down  # it went down, and came back up by itself
    shelf.faults.fault_port(2, "clear")
    await settle()
    assert shelf.faults.rows() == []
    (await in_thread(login, tcp)).close()


async def test_reinstate_forces_a_new_isid(shelf: Shelf) -> None:
    old = b"\x80\x12\x34\x56\x00\x01"
    ini = await in_thread(login, shelf.port(1), A, old)
    other = await in_thread(login, shelf.port(2), B, old)
    result = shelf.faults.fault_session(A, "reinstate")
    assert result["connections_dropped"] == 1 and result["isids"] == [old.hex()]
    assert await in_thread(silent_close, ini)
    with pytest.raises(LoginError) as refused_login:
        await in_thread(login, shelf.port(1), A, old)
    assert refused_login.value.status == LoginStatus.AUTHORIZATION_FAILURE  # 0x0202: do not retry it
    with pytest.raises(LoginError):
        await in_thread(login, shelf.port(2), A, old)  # on every port
    fresh = await in_thread(login, shelf.port(1), A, b"\x80\x12\x34\x56\x00\x02")
    assert (await in_thread(fresh.nop, b"new")).data == b"new"
    assert (await in_thread(other.nop, b"b")).data == b"b"  # another host with the same ISID is left alone
    assert shelf.faults.rows()[-1]["fault"] == "reinstate"
    shelf.faults.fault_session(A, "clear")
    (await in_thread(login, shelf.port(2), A, old)).close()
    fresh.close()
    other.close()


def test_a_retired_isid_continuing_its_session_is_told_it_does_not_exist() -> None:
    """TSIH set (session continuation): the session is gone, 0x020A, before any path fault is asked."""
    node = TargetNode(NodeConfig(target_name=TARGET), FakeDisk(), [PortalInfo(1, "127.0.0.1", 3260)])
    node.login_gate = lambda initiator, isid, port: (LoginStatus.AUTHORIZATION_FAILURE, "retired")
    conn = Connection(node, node.portals[1], Clock())
    ini = Initiator(config=InitiatorConfig(initiator_name=A), sock=LoopSocket(conn))
    ini.tsih = 7
    with pytest.raises(LoginError) as exc:
        ini.login(TARGET)
    assert exc.value.status == LoginStatus.SESSION_DOES_NOT_EXIST


def test_a_dropped_login_gets_no_answer_at_all() -> None:
    node = TargetNode(NodeConfig(target_name=TARGET), FakeDisk(), [PortalInfo(1, "127.0.0.1", 3260)])
    node.login_gate = lambda initiator, isid, port: (None, "port down for it") if initiator == A else None
    conn = Connection(node, node.portals[1], Clock())
    ini = Initiator(config=InitiatorConfig(initiator_name=A), sock=LoopSocket(conn))
    with pytest.raises(ConnectionError):
        ini.login(TARGET)
    assert conn.close_after_flush and conn.take_output() == [] and not node.sessions
    conn = Connection(node, node.portals[1], Clock())
    Initiator(config=InitiatorConfig(initiator_name=B), sock=LoopSocket(conn)).login(TARGET)
    assert len(node.sessions) == 1


def test_isid_bytes_in_rows_are_hex() -> None:
    node = TargetNode(NodeConfig(target_name=TARGET), FakeDisk(), [PortalInfo(1, "127.0.0.1", 3260)])
    faults = PathFaults(node, [], lambda code, text: None, lambda work: None)
    faults.retired["iqn.x"] = {b"\x80\x00\x00\x00\x00\x01"}
    assert faults.rows() == [{"port": None, "fault": "reinstate", "initiator": "iqn.x", "ms": None, "seconds": None,
                              "detail": "ISIDs retired: 0x800000000001", "since": None}]
