"""The emulator process: firmware model + two iSCSI portals + management API on one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from typing import Any, TypeVar, cast

from aiohttp import web

from firmware_model import operations
from firmware_model.cache import CACHE_FILE
from firmware_model.clock import MonotonicClock
from firmware_model.controller import Controller, ControllerError
from firmware_model.controller.views import DiskView, EventView, SpareView, UnitView
from firmware_model.events import EventCode
from firmware_model.scsi.injection import InjectionError, firing_text

from . import allocator
from .alerting.service import AlertService
from .alerting.settings import AlertSettingsError
from .alerts import Alert, Alerts
from .config import Settings
from .iscsi.node import NodeConfig, PortalInfo, TargetNode
from .iscsi.path_faults import PathFaults
from .iscsi.portal import Portal
from .management.api import make_app
from .management.auth import TOKEN_FILE, ApiAuth
from .management.commands import CommandError
from .management.stream import EventHub
from .recording import recorder as recording
from .snapshot.shelf import ShelfSnapshots
from .statelock import StateDirLock

log = logging.getLogger("msa500_emu")
T = TypeVar("T", DiskView, SpareView)


class LogSink:
    """Controller events into the process log (one line each, at the event's severity)."""

    LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}

    def send(self, alert: Alert) -> None:
        log.log(self.LEVELS.get(alert.severity, logging.INFO), "event %s: %s", alert.code, alert.message)


class Emulator:
    """Owns everything one `msa500-emu serve` runs; start() and stop() are idempotent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.monotonic()
        self.shelf: Controller | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._power_timer: asyncio.TimerHandle | None = None
        self._pending: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.alerts = Alerts("array", [LogSink()], echo=False)
        self.alerting = AlertService(settings, lambda: self.shelf, self.started_at)  # traps, syslog, webhooks
        self.event_hub = EventHub()  # GET /api/events/stream: every event, live
        self.node: TargetNode | None = None
        self.portals: list[Portal] = []
        self.port_faults: PathFaults | None = None  # FAULT PORTn / FAULT SESSION (iscsi/path_faults.py)
        self.api_runner: web.AppRunner | None = None
        self.api_port = settings.api.port
        self.api_auth = ApiAuth.disabled()
        self._lock = StateDirLock(settings.state_dir)
        self.left_behind = ""  # after stop(): what did not reach the drives, and why ("" when all did)
        self.recorder: recording.Recorder | None = None  # RECORD START / serve --record (msa500_emu/recording)
        self.shelf_snapshots = ShelfSnapshots(self)  # SNAPSHOT SAVE/RESTORE/LIST/DELETE, RESET (msa500_emu/snapshot)

    async def start(self) -> None:
        s = self.settings
        self._lock.acquire()  # before the firmware opens anything there: one emulator per state directory
        try:
            self.shelf = Controller(s.state_dir, s.shelf, MonotonicClock(), on_event=self._on_event)
        except BaseException:
            self._lock.release()
            raise
        self.shelf_snapshots.at_start()  # what RESET goes back to, before any host can change it
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
            discovery_chap=s.discovery_chap,
            login_timeout=s.login_timeout,
            max_connections=s.max_connections,
            max_connections_per_address=s.max_connections_per_address,
        )
        self.node = TargetNode(cfg, self.shelf.target, infos)
        self.node.access = self.shelf.access  # host connections: who may log in on which port
        self._refresh_delays()
        try:
            for info in infos:
                portal = Portal(self.node, info)
                await portal.start()
                self.portals.append(portal)
            self._wire_faults()
            if s.record_file is not None:  # serve --record FILE: from the first command on
                recording.start(self, str(s.record_file), s.record_data_cap, local=True)
            if s.api_auth:  # before listening: no moment without the token (TokenError: one line)
                self.api_auth = ApiAuth.from_file(s.api_token_file or s.state_dir / TOKEN_FILE)
            else:
                log.warning("API authentication is off (--no-api-auth): anyone who reaches %s may use it", s.api)
            app = make_app(self, self.health, self.api_auth)
            self.api_runner = web.AppRunner(app, access_log=None)
            await self.api_runner.setup()
            site = web.TCPSite(self.api_runner, s.api.host, s.api.port)
            await site.start()
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                self.api_port = server.sockets[0].getsockname()[1]
            self.api_auth.record(s.api.host, self.api_port)
            self._ticker = asyncio.create_task(self._tick(), name="controller-timers")
            await self.alerting.start()
        except BaseException:
            await self.stop()
            raise

    async def _tick(self) -> None:
        """Drive the controller's timers (rebuild, expansion) from the event loop."""
        ctl = self.shelf
        assert ctl is not None
        while True:
            due = ctl.next_deadline()
            now = ctl.clock.now()
            # An event (configure, restore, power on...) may bring a deadline forward. asyncio.timeout,
            # not wait_for: on 3.11 wait_for can swallow a cancel that races its completion.
            try:
                async with asyncio.timeout(1.0 if due is None else min(1.0, max(0.0, due - now))):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                ctl.advance(ctl.clock.now())
            except Exception:  # a bug in background work must not stop host I/O
                log.exception("controller background work failed")
                await asyncio.sleep(1.0)

    def _on_event(self, event: Any) -> None:
        self._wake.set()
        if self.recorder is not None:
            self.recorder.event(event)
        self.event_hub.publish(event)
        sev = getattr(event, "severity", "info")
        self.alerts.raise_(str(getattr(event, "code", "?")), str(getattr(sev, "value", sev)),
                           str(getattr(event, "message", "")))
        self.alerting.notify(event)  # queued: the sinks send from their own tasks

    def _refresh_delays(self) -> None:
        """Per-LUN injected latency: the slowest member drive of the unit's array."""
        if self.shelf is None or self.node is None:
            return
        slow = {d["bay"]: float(d.get("latency_ms") or 0) for d in self.shelf.disks()}
        delays: dict[int, float] = {}
        for unit in self.shelf.units():
            ms = max((slow.get(b, 0.0) for b in unit["bays"] if b is not None), default=0.0)
            if ms > 0:
                delays[int(unit["lun"])] = ms / 1000.0
        self.node.lun_delay = delays

    # -- the management layer's view of the array -------------------------------------
    def _ctl(self) -> Controller:
        if self.shelf is None:
            raise CommandError("the array is not running")
        return self.shelf

    def disks(self) -> list[DiskView]:
        return self._powered(self._ctl().disks())

    def units(self) -> list[UnitView]:
        return self._ctl().units()

    def spares(self) -> list[SpareView]:
        return self._powered(self._ctl().spares())

    def _powered(self, rows: list[T]) -> list[T]:
        """Views of a powered-off shelf say so on each row (`"powered": false`), as units do."""
        return rows if self._ctl().powered else [cast(T, {**r, "powered": False}) for r in rows]

    def powered_off_at(self) -> float | None:
        """When the shelf lost power (the event log's last SHELF_POWER_OFF), None while it is on."""
        ctl = self._ctl()
        if ctl.powered:
            return None
        off = [e for e in ctl.events() if e.get("code") == "SHELF_POWER_OFF"]
        return float(off[-1]["time"]) if off else None

    def events(self, since_id: int = 0) -> list[EventView]:
        return self._ctl().events(since_id)

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a row of the operations registry (firmware_model.operations), and nothing else.

        The call is checked against the row (arguments, types, limits) before its handler runs;
        `op` is positional-only: operations take keyword arguments of their own (add_unit's name=).
        """
        try:
            row, bound = operations.bind(op, args, kwargs)
        except operations.OperationError as exc:
            raise CommandError(str(exc)) from None
        owner = self if row.owner is operations.Owner.PROCESS else self._ctl()
        try:
            result = getattr(owner, row.method)(**bound)
        except Exception as exc:
            if self.recorder is not None:
                recording.operated(self, row.name, bound, exc)
            if isinstance(exc, ControllerError):
                raise CommandError(str(exc)) from exc
            raise
        if self.recorder is not None:
            recording.operated(self, row.name, bound, None)
        self._refresh_delays()
        if self.node is not None:  # a narrowed port or a deleted connection ends its sessions
            self.node.enforce_access()
        return result

    # -- alerts (msa500_emu.alerting) -------------------------------------------------
    def alert_status(self) -> dict[str, Any]:
        return self.alerting.show()

    def set_alerts(self, snmp: str | None = None, community: str | None = None, syslog: str | None = None,
                   webhook: str | None = None) -> dict[str, Any]:
        try:
            return self.alerting.set(snmp, community, syslog, webhook)
        except AlertSettingsError as exc:
            raise CommandError(str(exc)) from None

    # -- snapshots of the whole shelf (msa500_emu/snapshot/shelf.py) ---------------------
    def snapshot_save(self, name: str) -> dict[str, Any]:
        return self.shelf_snapshots.save(name)

    def snapshot_restore(self, name: str) -> dict[str, Any]:
        return self.shelf_snapshots.restore(name)

    def snapshots(self) -> list[dict[str, Any]]:
        return self.shelf_snapshots.list()

    def snapshot_delete(self, name: str) -> dict[str, Any]:
        return self.shelf_snapshots.delete(name)

    def reset(self) -> dict[str, Any]:
        return self.shelf_snapshots.reset()

    # -- record and replay (msa500_emu/recording) ----------------------------------------
    def record_start(self, file: str, data_cap: int | None = None) -> dict[str, Any]:
        return recording.start(self, file, data_cap)

    def record_stop(self) -> dict[str, Any]:
        return recording.stop(self)

    def record_status(self) -> dict[str, Any]:
        return recording.status(self)

    # -- path faults and command errors (iscsi/path_faults.py, firmware_model/scsi/injection.py) --
    def _wire_faults(self) -> None:
        ctl, node = self._ctl(), self.node
        assert node is not None
        self.port_faults = PathFaults(node, self.portals, lambda code, text: self._ctl().log.emit(code, text),
                                      self._schedule, lambda: self._ctl().powered, alua=ctl.set_port_alua)
        ctl.target.injections.notify = lambda inj, req, times: self._ctl().log.emit(
            EventCode.INJECTION_FIRED, firing_text(inj, req, times), lun=inj.lun)

    def _schedule(self, work: Any) -> None:
        self._pending[:] = [t for t in self._pending if not t.done()]
        self._pending.append(asyncio.get_running_loop().create_task(work))

    def _path_faults(self) -> PathFaults:
        if self.port_faults is None:
            raise CommandError("the iSCSI ports are not running")
        return self.port_faults

    def fault_port(self, port: int, action: str, initiator: str | None = None, **kw: Any) -> dict[str, Any]:
        return self._path_faults().fault_port(port, action, initiator, **kw)  # kw: ms (delay), seconds (flap)

    def fault_session(self, initiator: str, action: str) -> dict[str, Any]:
        return self._path_faults().fault_session(initiator, action)

    def path_faults(self) -> list[dict[str, Any]]:
        return self._path_faults().rows()

    def inject(self, lun: int, op: str, error: str, lba_first: int | None = None, lba_last: int | None = None,
               count: int | None = None, always: bool | None = None, initiator: str | None = None,
               port: int | None = None, sense: str | None = None, delay_ms: float | None = None) -> dict[str, object]:
        try:
            return self._ctl().target.injections.add(
                lun, op, error, lba_first=lba_first, lba_last=lba_last, count=None if always else count or 1,
                initiator=initiator, port=port, sense=sense, delay_ms=delay_ms).row()
        except InjectionError as exc:
            raise CommandError(str(exc)) from None

    def injections(self) -> list[dict[str, object]]:
        return self._ctl().target.injections.rows()

    def delete_injection(self, id: int) -> dict[str, object]:
        try:
            return self._ctl().target.injections.delete(id).row()
        except InjectionError as exc:
            raise CommandError(str(exc)) from None

    def clear_injections(self) -> dict[str, int]:
        return {"deleted": self._ctl().target.injections.clear()}

    # -- shelf power (fault injection) ---------------------------------------------------
    def power_off(self, duration: float | None = None) -> dict[str, Any]:
        """The shelf loses power (hosts see their connections drop); back by itself after `duration` s."""
        ctl = self._ctl()
        if not getattr(ctl, "powered", True):
            raise CommandError("the shelf is already powered off")
        for portal in self.portals:  # hosts see their connections drop; reconnects are refused
            portal.drop("shelf powered off")
        try:
            ctl.power_off()
        except ControllerError as exc:
            raise CommandError(str(exc)) from exc
        if self._power_timer is not None:
            self._power_timer.cancel()
        self._power_timer = None
        if duration:
            loop = asyncio.get_running_loop()
            self._power_timer = loop.call_later(duration, self._timed_power_on)
        log.warning("shelf powered off%s", f" for {duration:.0f} s" if duration else "")
        return {"powered": False, "duration_s": duration}

    def power_on(self) -> dict[str, Any]:
        ctl = self._ctl()
        if getattr(ctl, "powered", False):
            raise CommandError("the shelf is already powered on")
        if self._power_timer is not None:
            self._power_timer.cancel()
            self._power_timer = None
        try:
            ctl.power_on()
        except ControllerError as exc:
            raise CommandError(str(exc)) from exc
        self._pending.append(asyncio.get_running_loop().create_task(self._listen_again()))
        log.warning("shelf powered on")
        return {"powered": True}

    def _timed_power_on(self) -> None:
        self._power_timer = None
        try:
            self.power_on()
        except CommandError as exc:
            log.info("timed power-on skipped: %s", exc)

    async def _listen_again(self) -> None:
        for portal in self.portals:
            if self.port_faults is None or not self.port_faults.keeps_down(portal.info.port):
                await portal.start()

    async def settle(self) -> None:
        """Wait for work a command started (listeners coming back after power-on)."""
        while self._pending:
            await self._pending.pop(0)

    async def stop(self) -> None:
        if self._power_timer is not None:
            self._power_timer.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
            self._ticker = None
        if self.port_faults is not None:
            self.port_faults.close()  # no flap opens a listener while the portals stop
        for portal in self.portals:
            await portal.stop()
        self.portals.clear()
        if self.recorder is not None:  # after the portals: every command that ran is in it
            recording.stop(self, "the emulator stopped")
        if self.api_runner is not None:
            await self.api_runner.cleanup()
            self.api_runner = None
        self.api_auth.forget()
        if self.shelf is not None:
            self.left_behind = self._close_shelf(self.shelf)
            self.shelf = None
        await self.alerting.stop()
        self._lock.release()

    @staticmethod
    def _close_shelf(shelf: Controller) -> str:
        """Close the firmware; "" when everything is on the drives, else what stays where, and why."""
        problems: list[str] = []
        try:
            shelf.close()
        except Exception as exc:  # a full disk refuses the NVRAM: the cache still holds the data
            problems.append(f"the controller state was not saved ({exc})")
            log.error("shutdown: %s", problems[-1], exc_info=not isinstance(exc, OSError))
            try:
                shelf.flush()
            except Exception:
                log.debug("flush after a failed close", exc_info=True)
        cache = shelf.cache
        blocks = cache.dirty_bytes // 512
        if blocks:
            why = cache.stats().get("destage_blocked") or "; ".join(
                f"LUN {lun}: {exc}" for lun, exc in sorted(cache.errors.items())) or (
                "the shelf is powered off" if not shelf.powered else "destage did not finish")
            per_lun = ", ".join(f"LUN {lun}: {n} lines" for lun, n in sorted(cache.dirty_luns().items()))
            problems.insert(0, f"{blocks} unwritten blocks ({per_lun}) stay in the battery-backed cache "
                               f"{shelf.state_dir / CACHE_FILE} and are written to the drives at the next "
                               f"start; not written now because {why}")
        return "; ".join(problems)

    # -- views ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """`status`: "ok", "powered-off" (FAULT SHELF POWER-OFF: the process runs, the shelf does not) or "stopped".

        Unauthenticated (the Docker HEALTHCHECK asks it), so it says no more than that.
        """
        powered = self.shelf is not None and self.shelf.powered
        return {"status": "stopped" if self.shelf is None else "ok" if powered else "powered-off", "powered": powered}

    def describe(self) -> dict[str, Any]:
        assert self.shelf is not None and self.node is not None
        g: dict[str, Any] = dict(self.shelf.describe())
        g["uptime_s"] = round(time.monotonic() - self.started_at, 3)
        g["powered_off_at"] = self.powered_off_at()
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
            f"  front panel: http://{_host(self.settings.api.host)}:{self.api_port}/"
            + (f"?token={self.api_auth.token}" if self.api_auth.token is not None else ""),
            f"  API token: {self.api_auth.path} (send 'Authorization: Bearer <token>'; ctl finds it)"
            if self.api_auth.token is not None else "  API token: none (--no-api-auth: the API is open)",
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
    allocator.tune()  # megabyte buffers from the heap, not a fresh mmap each (allocator.py)
    emulator = Emulator(settings)
    await emulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(emulator.banner(), flush=True)  # after the handlers: a SIGTERM right after it stops cleanly
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
        log.info("shutting down: closing sessions, flushing drive images")
    finally:
        await emulator.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if emulator.left_behind:
        print(f"msa500-emu: stopped, not cleanly: {emulator.left_behind}", file=sys.stderr, flush=True)
        return 1
    print("msa500-emu: stopped cleanly", flush=True)
    return 0
