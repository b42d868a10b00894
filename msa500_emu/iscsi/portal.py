"""The asyncio shell around Connection: one TCP listener per controller port."""

from __future__ import annotations

import asyncio
import logging

from .connection import OUTPUT_HIGH_WATER, OUTPUT_LOW_WATER, Connection
from .node import PortalInfo, TargetNode

log = logging.getLogger("msa500_emu.iscsi")


class PortalProtocol(asyncio.Protocol):
    """Feeds bytes into the sans-I/O Connection and writes out what it produces.

    Back-pressure: while the transport's write buffer is above its high water
    (pause_writing), the connection takes no new PDU and the socket is not read, so an
    initiator that sends commands without reading their answers fills its own TCP window
    instead of this process's memory; resume_writing (below the low water) carries on.
    """

    def __init__(self, node: TargetNode, portal: PortalInfo, registry: set[PortalProtocol]) -> None:
        self.node = node
        self.portal = portal
        self.registry = registry
        self.loop = asyncio.get_running_loop()
        self.conn = Connection(node, portal, self.loop.time)
        self.conn.wakeup = self._flush_soon
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.peer = "?"
        self._flush_pending = False
        self._pump_pending = False
        self._reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER, low=OUTPUT_LOW_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.registry.add(self)
        log.debug("port %d: connection from %s", self.portal.port, self.peer)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive(data)
        self._flush()
        self._after_input()

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

    def _flush(self) -> None:
        self._flush_pending = False
        t = self.transport
        if t is None:
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
        self.conn.on_timer(self.loop.time())
        self._flush()
        if not self.conn.closed:
            self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: PortalProtocol(self.node, self.info, self.connections),
            self.info.host,
            self.info.tcp_port,
            reuse_address=True,
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
        if self.server is not None:
            await self.server.wait_closed()
