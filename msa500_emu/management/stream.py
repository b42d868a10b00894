"""GET /api/events/stream: the event log as server-sent events, live.

Each event goes out as `id: N` and one `data:` line of its JSON (the EventView of the log, with
its code). A client resumes with `Last-Event-ID` (what EventSource sends when it reconnects) or
`?since=N` (and `&tail=N`: only the last N of those, for a page that opens): the missed events
come from the persistent log, then live ones from the hub, which
the emulator feeds from its event callback. Each client has a bounded queue: a client that falls
that far behind is dropped (its stream ends; it reconnects and resumes from the log), so a slow
reader never grows the emulator's memory. The hub closes every stream when the API shuts down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger("msa500_emu.api")

STREAM_PATH = "/api/events/stream"
QUEUE_LIMIT = 256  # events a client may lag behind before it is dropped
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies and idle timers from closing the stream
WRITE_TIMEOUT_S = 30.0  # a client that takes no bytes for this long is dropped
RETRY_MS = 2000  # what EventSource waits before it reconnects


def frame(event: Mapping[str, Any]) -> bytes:
    """One event as an SSE message: its id, and its JSON on one data line."""
    return f"id: {int(event['id'])}\ndata: {json.dumps(dict(event), separators=(',', ':'))}\n\n".encode()


class Client:
    """One open stream: the frames waiting for it, and whether it fell too far behind."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: deque[tuple[int, bytes]] = deque()
        self.dropped = False
        self.wake = asyncio.Event()

    def offer(self, event_id: int, data: bytes) -> bool:
        """Queue a frame; False (and dropped) when the client already holds `limit` of them."""
        if len(self.pending) >= self.limit:
            self.dropped = True
            self.pending.clear()
            self.wake.set()
            return False
        self.pending.append((event_id, data))
        self.wake.set()
        return True


class EventHub:
    """Fans events out to the open streams; called on the event loop (Emulator._on_event)."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self.clients: set[Client] = set()
        self.closed = False
        self.dropped = 0  # clients dropped for falling behind, since start

    def subscribe(self) -> Client:
        client = Client(self.limit)
        if self.closed:
            client.wake.set()
        else:
            self.clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    def publish(self, event: Any) -> None:
        """Hand an event (a firmware_model Event, or its dict) to every open stream; never blocks."""
        if not self.clients:
            return
        data = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        raw = frame(data)
        for client in list(self.clients):
            if not client.offer(int(data["id"]), raw):
                self.clients.discard(client)
                self.dropped += 1
                log.warning("event stream client dropped: more than %d events behind", self.limit)

    def close(self) -> None:
        """End every stream (the API is shutting down); later subscribers end at once."""
        self.closed = True
        for client in self.clients:
            client.wake.set()
        self.clients.clear()


def resume_point(request: web.Request) -> int | None:
    """The last event id the client has: `Last-Event-ID` (a reconnect), else `?since=`; None if malformed."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        raw = request.query.get("since", "0")
    raw = raw.strip()
    return int(raw) if raw.isdigit() else None


async def _send(resp: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT_S):
        await resp.write(data)


async def serve_stream(request: web.Request, array: Any, hub: EventHub) -> web.StreamResponse:
    """Replay the log after the resume point, then follow the hub until the client or the API goes."""
    from .api import error
    from .commands import CommandError

    since = resume_point(request)
    if since is None:
        return error(400, "Last-Event-ID / since: an event id (0 or more)")
    client = hub.subscribe()  # before reading the log: nothing can fall between the two
    resp: web.StreamResponse | None = None
    try:
        try:
            backlog = array.events(since)
        except CommandError as exc:
            return error(503, str(exc))
        tail = request.query.get("tail", "")
        if tail.isdigit() and "Last-Event-ID" not in request.headers:
            backlog = backlog[-int(tail):] if int(tail) else []  # a page opening: only the latest few
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        last = since
        await _send(resp, f"retry: {RETRY_MS}\n\n".encode())
        for event in backlog:
            await _send(resp, frame(event))
            last = int(event["id"])
        while not hub.closed:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    await client.wake.wait()
            except TimeoutError:
                await _send(resp, b": keep-alive\n\n")
                continue
            client.wake.clear()
            if client.dropped:
                break
            while client.pending:
                event_id, raw = client.pending.popleft()
                if event_id > last:  # the backlog may already have carried it
                    await _send(resp, raw)
                    last = event_id
        return resp
    except (ConnectionResetError, TimeoutError) as exc:
        log.info("event stream to %s ended: %s", request.remote,
                 "the client stopped reading" if isinstance(exc, TimeoutError) else "the client went away")
        if request.transport is not None:
            request.transport.abort()  # a stalled peer: no waiting for it to drain the end of the stream
        return resp if resp is not None else web.Response(status=204)
    finally:
        hub.unsubscribe(client)


def add_routes(app: web.Application, array: Any) -> EventHub:
    """Register the stream; the hub is the emulator's (`array.event_hub`) or a new one."""
    hub = getattr(array, "event_hub", None)
    if not isinstance(hub, EventHub):
        hub = EventHub()

    async def get_stream(request: web.Request) -> web.StreamResponse:
        return await serve_stream(request, array, hub)

    async def close_streams(app: web.Application) -> None:
        hub.close()

    app.router.add_get(STREAM_PATH, get_stream)
    app.on_shutdown.append(close_streams)
    return hub
