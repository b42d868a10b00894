"""SNAPSHOT SAVE / RESTORE / LIST / DELETE and RESET: the Emulator's room for the whole shelf.

Consistency: each operation runs on the event loop between two SCSI commands (the firmware
executes a command, and each step of background work, synchronously), so no command is half
applied; the NVRAM is written first, and the cache file is copied as it is, dirty lines included
(a destage would change the state being saved, and cannot run on a shelf that is powered off or
whose drives refuse writes; the restored controller replays those lines at open, as after a crash).

RESTORE closes the controller, puts the snapshot's files in place and opens a new controller on
them; the iSCSI sessions stay logged in and are rebound to the new SCSI target. Each of them sees
what a controller reset gives: 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on every LUN at
its next command, then 3F/0E REPORTED LUNS DATA HAS CHANGED when the set of LUNs differs. Path
faults and command injections (the test harness's, not the shelf's) stay in force; RESET, the
state right after start, clears them too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from typing import TYPE_CHECKING, Any

from firmware_model.clock import MonotonicClock
from firmware_model.controller import Controller
from firmware_model.controller.errors import ShelfError
from firmware_model.events import EVENTS_FILE, EventCode, EventLog
from firmware_model.operations import PORT_COUNT
from firmware_model.scsi.constants import Asc

from ..alerting.settings import AlertSettingsError, apply_runtime
from ..management.grammar import CommandError
from .files import allocated, can_reflink, shelf_files
from .store import START, Manifest, SnapshotError, SnapshotStore, check_name

if TYPE_CHECKING:
    from ..server import Emulator

log = logging.getLogger("msa500_emu.snapshot")
MIB = 1 << 20
#: without reflinks, the snapshot at start copies the shelf's data: above this, start would be slow
START_COPY_MAX = 2 << 30
PROCESS_HOOKS = ("observer",)  # ScsiTarget attributes the process sets (record/replay's command observer)


class ShelfSnapshots:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.store = SnapshotStore(emulator.settings.state_dir)
        self.start_cost: dict[str, float] = {}  # the automatic snapshot at start: seconds, MiB stored
        self.start_error = ""

    # -- the automatic snapshot at start ---------------------------------------------------
    def at_start(self) -> None:
        """Snapshot the state right after start (for RESET); a failure is logged, never fatal."""
        self.store.sweep()
        t0 = time.monotonic()
        data = allocated(shelf_files(self.store.state_dir))
        self.store.root.mkdir(exist_ok=True)
        if data > START_COPY_MAX and not can_reflink(self.store.root):
            self.start_error = (f"the shelf holds {data / (1 << 30):.1f} GiB of data and its file system has no "
                                f"reflinks: copying it at every start would be slow (at most "
                                f"{START_COPY_MAX >> 30} GiB); SNAPSHOT SAVE name takes one by hand")
            log.warning("no snapshot at start, RESET is not available: %s", self.start_error)
            shutil.rmtree(self.store.path(START), ignore_errors=True)  # the last start's: not this one
            return
        try:
            man = self._save(START, replace=True)
        except (SnapshotError, CommandError) as exc:
            self.start_error = str(exc)
            log.warning("no snapshot at start, RESET is not available: %s", exc)
            return
        self.start_cost = {"seconds": round(time.monotonic() - t0, 4), "stored_mib": round(man.stored / MIB, 2)}
        log.info("state at start kept for RESET: %d files, %.1f MiB in %.3f s", len(man.files),
                 man.stored / MIB, self.start_cost["seconds"])

    # -- the operations -------------------------------------------------------------------
    def save(self, name: str) -> dict[str, Any]:
        man = self._save(self._name(name))
        self.emu._ctl().log.emit(EventCode.SNAPSHOT_SAVED, f"snapshot {name} saved: {len(man.files)} files, "
                                                           f"{man.stored / MIB:.1f} MiB")
        return man.row()

    def list(self) -> list[dict[str, Any]]:
        return [m.row() for m in self.store.list()]

    def delete(self, name: str) -> dict[str, Any]:
        try:
            return self.store.delete(self._name(name)).row()
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None

    def restore(self, name: str) -> dict[str, Any]:
        man = self._manifest(self._name(name))
        return self._restore(man, EventCode.SNAPSHOT_RESTORED, f"snapshot {name} restored (taken "
                             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(man.taken))})")

    def reset(self) -> dict[str, Any]:
        if self.start_error:
            raise CommandError(f"RESET is not available: {self.start_error}")
        man = self._manifest(START)
        emu = self.emu
        if emu.port_faults is not None:  # the state right after start has no path faults
            for port in range(1, PORT_COUNT + 1):
                if emu.port_faults.rows(port):
                    emu.port_faults.fault_port(port, "clear")
            emu.port_faults.retired.clear()
        out = self._restore(man, EventCode.SHELF_RESET, "the shelf was reset to its state at start", keep_faults=False)
        out["name"] = None
        return out

    # -- how ----------------------------------------------------------------------------
    @staticmethod
    def _name(name: str) -> str:
        try:
            return check_name(name)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None

    def _manifest(self, name: str) -> Manifest:
        try:
            return self.store.manifest(name)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None

    def _save(self, name: str, *, replace: bool = False) -> Manifest:
        ctl = self.emu._ctl()
        try:
            ctl.nvram.save()  # what the controller holds in memory, on its files first
        except OSError as exc:
            raise CommandError(f"snapshot {name!r} not taken: the NVRAM cannot be written ({exc})") from None
        try:
            return self.store.save(name, ctl.identity.serial, replace=replace)
        except SnapshotError as exc:
            raise CommandError(str(exc)) from None

    def _restore(self, man: Manifest, code: EventCode, message: str, *, keep_faults: bool = True) -> dict[str, Any]:
        emu = self.emu
        old = emu._ctl()
        if man.serial != old.identity.serial:  # a snapshot directory copied from another array
            raise CommandError(f"snapshot {man.name!r} is of shelf {man.serial}, this is {old.identity.serial}")
        node = emu.node
        was_powered = old.powered
        nexuses = old.target.known_nexuses()
        old_luns = set(old.target.luns)
        last_id = old.log.last_id
        injections = old.target.injections
        if emu._power_timer is not None:  # a timed power-on must not reach the new controller
            emu._power_timer.cancel()
            emu._power_timer = None
        if emu._ticker is not None:
            emu._ticker.cancel()
            emu._ticker = None
        t0 = time.monotonic()
        left = emu._close_shelf(old)
        if left:
            log.info("restore: the closed controller left %s (the snapshot replaces it)", left)
        emu.shelf = None
        try:
            self.store.put_back(man)
            # ids never go back: the restored log continues after the last id anyone was told
            marker = EventLog(emu.settings.state_dir / EVENTS_FILE, MonotonicClock(), time.time)
            marker.continue_after(last_id)
            emu._on_event(marker.emit(code, message))
            new = Controller(emu.settings.state_dir, emu.settings.shelf, MonotonicClock(), on_event=emu._on_event)
        except (SnapshotError, ShelfError, OSError, ValueError) as exc:
            log.error("restore of %s failed, the array has no shelf now: %s", man.name, exc)
            for portal in emu.portals:  # no session may reach the closed controller
                portal.drop("snapshot restore failed")
            raise CommandError(f"restore of snapshot {man.name!r} failed: {exc}; the array is not running "
                               "(restart it, or RESTORE another snapshot)") from None
        emu.shelf = new
        new.target.injections = injections  # the harness's (and told to the log); RESET empties them
        for hook in PROCESS_HOOKS:  # what the process hung on the old target goes on watching the new one
            if getattr(old.target, hook, None) is not None:
                setattr(new.target, hook, getattr(old.target, hook))
        if not keep_faults:
            injections.clear()
        faults = emu.port_faults
        if faults is not None:  # the ALUA side of the ports kept down, on the new target
            faults.alua = new.set_port_alua
            for port in range(1, PORT_COUNT + 1):
                if faults.keeps_down(port):
                    new.set_port_alua(port, "offline")
        if node is not None:
            node.scsi = new.target
            node.stats = new.target.stats
            node.access = new.access
            if set(new.target.luns) != old_luns:  # 29/00 comes first: each nexus is new to this target
                for nexus in nexuses:
                    for lun in new.target.luns:
                        new.target.establish_unit_attention(lun, Asc.REPORTED_LUNS_DATA_HAS_CHANGED, nexus=nexus)
            node.enforce_access()
        self._reload_alerts()
        emu._refresh_delays()
        emu._ticker = asyncio.get_running_loop().create_task(emu._tick(), name="controller-timers")
        if not was_powered:  # the portals stopped listening at power-off; the restored shelf is on
            emu._pending.append(asyncio.get_running_loop().create_task(emu._listen_again()))
        log.warning("%s in %.3f s", message, time.monotonic() - t0)
        return {**man.row(), "luns_changed": set(new.target.luns) != old_luns, "sessions": len(nexuses)}

    def _reload_alerts(self) -> None:
        """The restored alerts.json (SET ALERTS) or the config file's [alerts], as at start."""
        svc = self.emu.alerting
        saved = svc.state.load()
        current = svc.config
        if saved is not None:
            try:
                current = apply_runtime(svc.config, saved, f"SET ALERTS ({svc.state.path})")
            except AlertSettingsError as exc:
                log.warning("alerts after restore: %s; the config file's [alerts] is used", exc)
        svc.current = current
        svc.dispatcher.replace(svc._build(current))
