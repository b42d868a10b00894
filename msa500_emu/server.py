"""The emulator process: firmware model + two iSCSI portals + management API on one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from aiohttp import web

from firmware_model.clock import MonotonicClock
from firmware_model.shelf import Shelf

from .config import Settings
from .iscsi.node import NodeConfig, PortalInfo, TargetNode
from .iscsi.portal import Portal
from .management.api import make_app

log = logging.getLogger("msa500_emu")


class Emulator:
    """Owns everything one `msa500-emu serve` runs; start() and stop() are idempotent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.monotonic()
        self.shelf: Shelf | None = None
        self.node: TargetNode | None = None
        self.portals: list[Portal] = []
        self.api_runner: web.AppRunner | None = None
        self.api_port = settings.api.port

    async def start(self) -> None:
        s = self.settings
        self.shelf = Shelf(s.state_dir, s.shelf, MonotonicClock())
        infos = [
            PortalInfo(1, s.port1.host, s.port1.port),
            PortalInfo(2, s.port2.host, s.port2.port),
        ]
        cfg = NodeConfig(
            target_name=self.shelf.identity.target_name,
            chap=s.chap,
            nop_interval=s.nop_interval,
            nop_timeout=s.nop_timeout,
            cmd_window=s.cmd_window,
        )
        self.node = TargetNode(cfg, self.shelf.controller, infos)
        try:
            for info in infos:
                portal = Portal(self.node, info)
                await portal.start()
                self.portals.append(portal)
            app = make_app(self, self.health)
            self.api_runner = web.AppRunner(app, access_log=None)
            await self.api_runner.setup()
            site = web.TCPSite(self.api_runner, s.api.host, s.api.port)
            await site.start()
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                self.api_port = server.sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for portal in self.portals:
            await portal.stop()
        self.portals.clear()
        if self.api_runner is not None:
            await self.api_runner.cleanup()
            self.api_runner = None
        if self.shelf is not None:
            self.shelf.close()
            self.shelf = None

    # -- views ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.shelf is not None else "stopped",
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "portals": [str(p.info.address) for p in self.portals],
        }

    def describe(self) -> dict[str, Any]:
        assert self.shelf is not None and self.node is not None
        g = self.shelf.describe()
        g["uptime_s"] = round(time.monotonic() - self.started_at, 3)
        g["portals"] = [
            {
                "port": p.info.port,
                "address": f"{p.info.host}:{p.info.tcp_port}",
                "tpgt": p.info.tpgt,
                "sessions": sum(1 for s in self.node.sessions.values() if s.portal.port == p.info.port),
            }
            for p in self.portals
        ]
        g["sessions"] = [s.describe() for s in self.node.sessions.values()]
        return g

    def urls(self) -> list[str]:
        assert self.shelf is not None
        name = self.shelf.identity.target_name
        return [f"iscsi://{_host(p.info.host)}:{p.info.tcp_port}/{name}/1" for p in self.portals]

    def banner(self) -> str:
        assert self.shelf is not None
        name = self.shelf.identity.target_name
        lines = [f"msa500-emu: MSA500 {self.shelf.identity.serial} serving {name}",
                 f"  state directory: {self.shelf.state_dir}"]
        for p in self.portals:
            host = _host(p.info.host)
            lines.append(f"  port {p.info.port}: iSCSI portal {host}:{p.info.tcp_port} (TPGT {p.info.tpgt})")
        first = self.portals[0].info
        host = _host(first.host)
        lines += [
            f"  management API: http://{_host(self.settings.api.host)}:{self.api_port}/api/health",
            "attach:",
            f"  iscsi-ls -s iscsi://{host}:{first.tcp_port}",
            f"  qemu-system-x86_64 ... -drive if=none,id=d0,format=raw,cache=none,"
            f"file=iscsi://{host}:{first.tcp_port}/{name}/1 -device scsi-block,drive=d0",
            f"  msa500-emu ctl --api http://{_host(self.settings.api.host)}:{self.api_port} SHOW GLOBALS",
        ]
        return "\n".join(lines)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> int:
    emulator = Emulator(settings)
    await emulator.start()
    print(emulator.banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        log.info("shutting down: closing sessions, flushing drive images")
    finally:
        await emulator.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("msa500-emu: stopped cleanly", flush=True)
    return 0
