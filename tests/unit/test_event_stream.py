"""The event stream (management/stream.py): SSE framing, resume from the log, the bounded per-client
queue, and streams that end when the API shuts down; on a real EventLog, over real HTTP (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from firmware_model.clock import VirtualClock
from firmware_model.enclosure import DriveState
from firmware_model.events import EventCode, EventLog
from msa500_emu.management import stream
from msa500_emu.management.panel import STATIC_DIR
from msa500_emu.management.stream import EventHub, frame

WAIT_S = 10.0  # generous bound on every wait; nothing here should take more than milliseconds


class LogArray:
    """What the stream needs of the emulator: its event log (a real one) and its hub."""

    def __init__(self, limit: int = 256) -> None:
        self.event_hub = EventHub(limit)
        self.log = EventLog(None, VirtualClock(), lambda: 1_800_000_000.0, subscriber=self.event_hub.publish)

    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        return self.log.events(since_id)

    def emit(self, n: int = 1, code: EventCode = EventCode.DRIVE_FAILED) -> None:
        for i in range(n):
            self.log.emit(code, f"drive in bay {i % 14 + 1} failed", bay=i % 14 + 1)


async def client_for(arr: LogArray) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    stream.add_routes(app, arr)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def read_events(resp: Any, count: int) -> list[dict[str, Any]]:
    """The next `count` events of an open stream (id and data lines; comments and retry skipped)."""
    out: list[dict[str, Any]] = []
    event_id = None
    async with asyncio.timeout(WAIT_S):
        while len(out) < count:
            line = (await resp.content.readline()).decode()
            if not line:
                break
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["id"] == event_id
                out.append(data)
    return out


def test_a_frame_is_an_id_and_one_line_of_json_with_the_code() -> None:
    arr = LogArray()
    arr.emit()
    raw = frame(arr.events()[0]).decode()
    lines = raw.split("\n")
    assert lines[0] == "id: 1" and lines[1].startswith("data: ") and lines[2:] == ["", ""]
    assert json.loads(lines[1][6:])["code"] == "DRIVE_FAILED"


def test_a_slow_client_is_dropped_at_its_bound_and_the_others_keep_theirs() -> None:
    hub = EventHub(limit=4)
    slow, fast = hub.subscribe(), hub.subscribe()
    log = EventLog(None, VirtualClock(), lambda: 0.0, subscriber=hub.publish)
    for i in range(10):
        log.emit(EventCode.DRIVE_PULLED, f"pulled {i}")
        assert len(slow.pending) <= 4  # never more than the bound, whatever the rate
        while len(fast.pending) > 1:  # the fast one keeps reading
            fast.pending.popleft()
    assert slow.dropped and not slow.pending and slow not in hub.clients and hub.dropped == 1
    assert not fast.dropped and fast in hub.clients and fast.pending[-1][0] == 10


def test_close_ends_every_stream_and_later_ones_at_once() -> None:
    hub = EventHub()
    a = hub.subscribe()
    hub.close()
    assert a.wake.is_set() and not hub.clients
    assert hub.subscribe().wake.is_set() and not hub.clients


def test_the_page_maps_every_drive_state() -> None:
    """The page's table of DiskView states covers every DriveState value (and empty)."""
    script = (STATIC_DIR / "panel.js").read_text()
    for value in [*(s.value for s in DriveState), "empty"]:
        assert f'"{value}":' in script, value


async def test_backlog_after_since_then_live_events() -> None:
    arr = LogArray()
    arr.emit(5)
    client = await client_for(arr)
    try:
        resp = await client.get("/api/events/stream?since=3")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert [e["id"] for e in await read_events(resp, 2)] == [4, 5]
        arr.emit(1, EventCode.SHELF_POWER_ON)
        live = await read_events(resp, 1)
        assert live[0]["id"] == 6 and live[0]["code"] == "SHELF_POWER_ON"
        resp.close()
    finally:
        await client.close()


async def test_last_event_id_resumes_with_exactly_the_missed_events() -> None:
    arr = LogArray()
    arr.emit(3)
    client = await client_for(arr)
    try:
        first = await client.get("/api/events/stream?since=0")
        seen = await read_events(first, 3)
        first.close()
        arr.emit(4)  # while the client is away
        again = await client.get("/api/events/stream?since=0", headers={"Last-Event-ID": str(seen[-1]["id"])})
        assert [e["id"] for e in await read_events(again, 4)] == [4, 5, 6, 7]
        again.close()
        tail = await client.get("/api/events/stream?tail=2")
        assert [e["id"] for e in await read_events(tail, 2)] == [6, 7]
        tail.close()
        bad = await client.get("/api/events/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status == 400 and "event id" in (await bad.json())["error"]
    finally:
        await client.close()


async def test_a_dropped_stream_ends_and_the_client_resumes_from_the_log() -> None:
    arr = LogArray(limit=2)
    client = await client_for(arr)
    try:
        resp = await client.get("/api/events/stream?since=0")
        await read_events(resp, 0)
        async with asyncio.timeout(WAIT_S):
            while not arr.event_hub.clients:  # the handler has subscribed
                await asyncio.sleep(0.01)
        arr.emit(5)  # in one go: more than the bound before the handler runs again
        got = await read_events(resp, 5)
        assert len(got) < 5 and arr.event_hub.dropped == 1  # the stream ended early
        last = got[-1]["id"] if got else 0
        again = await client.get("/api/events/stream", headers={"Last-Event-ID": str(last)})
        assert [e["id"] for e in await read_events(again, 5 - len(got))] == list(range(last + 1, 6))
        again.close()
    finally:
        await client.close()


async def test_shutdown_ends_open_streams_instead_of_waiting_for_them() -> None:
    arr = LogArray()
    client = await client_for(arr)
    resp = await client.get("/api/events/stream")
    assert resp.status == 200
    async with asyncio.timeout(WAIT_S):  # aiohttp would wait its shutdown timeout (60 s) for a live handler
        await client.close()
    assert arr.event_hub.closed and not arr.event_hub.clients
