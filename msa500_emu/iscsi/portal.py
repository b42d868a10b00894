"""The asyncio shell around Connection: one TCP listener per controller port."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import Future

from .connection import OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER, Connection
from .node import PortalInfo, TargetNode
from .path_faults import ConnHold, PortState, hold_input, hold_output, hold_timer
from .repeat_log import RepeatLog

log = logging.getLogger("msa500_emu.iscsi")


class PortalProtocol(asyncio.Protocol):
    """Feeds bytes into the sans-I/O Connection and writes out what it produces.

    Back-pressure: while the transport's write buffer is above its high water
    (pause_writing), the connection takes no new PDU and the socket is not read, so an
    initiator that sends commands without reading their answers fills its own TCP window
    instead of this process's memory; resume_writing (below the low water) carries on.

    Limits at accept (cheap counts, no per-PDU cost): at most `max_connections` per portal,
    at most `max_connections_per_address` not yet logged in from one source address; a
    connection over either is closed at once. One that has not logged in within
    `login_timeout` seconds is closed by the connection's own timer.
    """

    def __init__(self, owner: Portal) -> None:
        self.owner = owner
        self.node = owner.node
        self.portal = owner.info
        self.registry = owner.connections
        self.loop = asyncio.get_running_loop()
        self.conn = Connection(self.node, self.portal, self.loop.time)
        self.conn.wakeup = self._flush_soon
        self.conn.can_step = True  # long commands in steps, other connections served between (stepping.py)
        self.conn.step_soon = self._step_soon
        self._step_pending = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "?"
        self._flush_pending = False
        self._pump_pending = False
        self._reading_paused = False
        self._unlogged_from: str | None = None  # counted in owner.unlogged until login completes
        self.fault: ConnHold | None = None  # what a path fault holds back (path_faults.py)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        address = str(peer[0]) if peer else "?"
        cfg = self.node.config
        owner = self.owner
        if len(self.registry) >= cfg.max_connections:
            limit = "max_connections"
            why = f"{len(self.registry)} connections open ({limit} {cfg.max_connections})"
        elif owner.unlogged.get(address, 0) >= cfg.max_connections_per_address:
            limit = "max_connections_per_address"
            why = (f"{owner.unlogged[address]} connections from that address not logged in "
                   f"({limit} {cfg.max_connections_per_address})")
        else:
            limit = ""
        if limit:
            owner.refused += 1
            owner.repeats.warning(("refused", limit), "port %d: refusing a connection from %s: %s",
                                  self.portal.port, self.peer, why)
            self.conn.closed = True
            transport.close()
            return
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER, low=OUTPUT_LOW_WATER)  # type: ignore[attr-defined]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.registry.add(self)
        self._unlogged_from = address
        owner.unlogged[address] = owner.unlogged.get(address, 0) + 1
        log.debug("port %d: connection from %s", self.portal.port, self.peer)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        if self.owner.faults.any and hold_input(self, data):
            return
        conn = self.conn
        conn.receive(data)
        if self._unlogged_from is not None and conn.login is None:
            self._uncount()  # logged in (once per connection): NOP checks replace the login deadline
            if not conn.closed:
                self._arm_timer()
        self._flush()
        self._after_input()

    def _uncount(self) -> None:
        address, self._unlogged_from = self._unlogged_from, None
        unlogged = self.owner.unlogged
        if address is not None:
            n = unlogged.get(address, 0) - 1
            if n > 0:
                unlogged[address] = n
            else:
                unlogged.pop(address, None)

    def _after_input(self) -> None:
        """Stop reading while PDUs wait for the output to drain; go on with them when it has."""
        conn = self.conn
        t = self.transport
        if t is not None and not t.is_closing():
            if conn.input_held and not self._reading_paused:
                self._reading_paused = True
                t.pause_reading()
            elif not conn.input_held and self._reading_paused and not conn.paused:
                self._reading_paused = False
                t.resume_reading()
            if conn.input_held and not conn.paused and not self._pump_pending:
                # Only our own queue was full (it is flushed now): go on at the next loop turn,
                # after the other connections had theirs.
                self._pump_pending = True
                self.loop.call_soon(self._pump)
        if conn.deferred and self.timer is not None and self.timer.when() > conn.deferred[0][0]:
            self._arm_timer()  # a held-back response is due before the next NOP check

    def _pump(self) -> None:
        self._pump_pending = False
        if self.transport is None:
            return
        self.conn.pump()
        self._flush()
        self._after_input()

    def pause_writing(self) -> None:
        self.conn.paused = True

    def resume_writing(self) -> None:
        conn = self.conn
        conn.paused = False
        conn.output_drained()
        if self.transport is not None and not self._pump_pending:
            self._pump_pending = True
            self.loop.call_soon(self._pump)

    def _flush_soon(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _step_soon(self) -> None:
        if not self._step_pending:
            self._step_pending = True
            self.loop.call_soon(self._step)

    def _step(self) -> None:
        """One step of the connection's long command, then the output; the next at the next turn."""
        self._step_pending = False
        if self.transport is None:
            return
        more = self.conn.step()
        self._flush()
        self._after_input()
        if isinstance(more, Future):  # an fdatasync on a drive-I/O thread: go on when it is done
            asyncio.wrap_future(more, loop=self.loop).add_done_callback(self._waited)
        elif more:
            self._step_soon()

    def _waited(self, done: asyncio.Future[None]) -> None:
        done.exception()  # the step that waited reads the outcome itself
        self._step_soon()

    def _flush(self) -> None:
        self._flush_pending = False
        t = self.transport
        if t is None:
            return
        if (self.owner.faults.any or self.fault is not None) and hold_output(self):
            return
        out = self.conn.take_output()
        if out:
            t.writelines(out)
        if self.conn.close_after_flush and not t.is_closing():
            t.close()

    def _arm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(self.conn.next_deadline(), self._on_timer)

    def _on_timer(self) -> None:
        if self.owner.faults.any and hold_timer(self):
            return
        conn = self.conn
        conn.on_timer(self.loop.time())
        if conn.close_after_flush and conn.login is not None and conn.close_reason == "login timeout":
            self.owner.repeats.warning(("login timeout",), "port %d: closing the connection from %s: "
                                       "no login within %g s", self.portal.port, self.peer,
                                       self.node.config.login_timeout)
        self._flush()
        if not conn.closed and not conn.close_after_flush:
            self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None and self.conn.closed and self not in self.registry:
            return  # refused at accept
        self._uncount()
        if self.timer is not None:
            self.timer.cancel()
        self.registry.discard(self)
        self.conn.connection_lost()
        self.transport = None
        log.debug("port %d: connection from %s closed", self.portal.port, self.peer)


class Portal:
    """Listens for one controller port."""

    def __init__(self, node: TargetNode, portal: PortalInfo) -> None:
        self.node = node
        self.info = portal
        self.server: asyncio.Server | None = None
        self.connections: set[PortalProtocol] = set()
        self.unlogged: dict[str, int] = {}  # source address -> connections not logged in yet
        self.refused = 0  # connections closed at accept (over a limit)
        self.repeats = RepeatLog(time.monotonic)
        self.repeats.where = f" on port {portal.port}"
        self.faults = PortState()  # FAULT PORTn ...: set by path_faults.PathFaults

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: PortalProtocol(self),
            self.info.host,
            self.info.tcp_port,
            reuse_address=True,
            backlog=1024,
        )
        sock = self.server.sockets[0].getsockname()
        self.info.tcp_port = sock[1]

    def drop(self, reason: str) -> None:
        """Stop listening and cut every connection now (shelf power loss, shutdown)."""
        if self.server is not None:
            self.server.close()
        for proto in list(self.connections):
            proto.conn.request_close(reason)
            proto._flush()
            if proto.transport is not None:
                proto.transport.close()

    async def stop(self) -> None:
        self.drop("target shutting down")
        self.repeats.flush()
        if self.server is not None:
            await self.server.wait_closed()
