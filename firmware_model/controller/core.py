"""The controller: wiring and lifecycle of its subsystems, behind one facade.

This is the shelf as the firmware sees it. The enclosure (firmware_model.enclosure) holds
the drives; the controller groups them into arrays (A, B, C...), carves logical drives
(LUN 1-32, each a RaidVolume on its own extent of the array's members) and serves them
through the SCSI target (`target`). It keeps the configuration where Smart Array keeps it: on
every drive's reserved area and in NVRAM (firmware_model.metadata), so a restart comes back
as it was, and drives are recognised by serial wherever they sit.

Each job has its own module and object, reached from here: `startup` (open, build, migrate,
restore), `volumes` (RaidVolumes, units, states, what I/O reports), `drive_events` (drives
lost and arrived, spares), `background` (rebuild, copy-back) and `expansion` with their own
deadlines, `provisioning`, `faults`, `accel` (cache, battery, power), `rso_link`, `views`,
`nvram`. The shared state (enclosure, arrays, logical drives, configuration, cache, event
log) lives here. The public methods below are the operations the management layer offers
(firmware_model.operations lists them); each validates its input and raises ControllerError
with one line on bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..battery import Battery
from ..cache import CacheSettings, WriteCache
from ..clock import Clock, MonotonicClock
from ..enclosure import Enclosure
from ..events import EVENTS_FILE, Event, EventCode, EventLog
from ..metadata import ShelfConfig
from ..operations import PORT_COUNT
from ..rso import Rso
from ..rso_scsi import register_rso_commands
from ..scsi.identity import TargetIdentity
from ..scsi.target import ScsiTarget
from ..scsi.units import ControllerUnit
from ..write_journal import IntentLog, MemberJournal
from .accelerator import Accelerator
from .access import Access, AclView, ConnectionView, PortAccessView
from .alua_link import AluaLink
from .background import Background
from .drive_events import DriveEvents
from .expansion import Expansion
from .faults import Faults
from .nvram import Nvram
from .pr_store import PrStore
from .provisioning import Provisioning
from .records import ArrayRt, LogicalDrive
from .rso_link import RsoLink
from .spec import ShelfSpec
from .startup import Startup
from .views import DiskView, EventView, GlobalsView, SpareView, UnitView, Views
from .volumes import Volumes


class Controller:
    """Opens (or builds) the shelf in a state directory and serves it through `target`
    (the ScsiTarget: LUN 0 and the logical drives); `identity` holds its names."""

    cfg: ShelfConfig
    cache: WriteCache
    cache_cfg: CacheSettings
    battery: Battery

    def __init__(
        self,
        state_dir: Path,
        spec: ShelfSpec | None = None,
        clock: Clock | None = None,
        *,
        wall: Callable[[], float] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.spec = spec if spec is not None else ShelfSpec()
        self.log = EventLog(self.state_dir / EVENTS_FILE, self.clock, wall or time.time, subscriber=on_event)
        self.enclosure = Enclosure(self.state_dir)
        self.arrays: dict[str, ArrayRt] = {}
        self.lds: dict[int, LogicalDrive] = {}
        self.next_drive = 1
        self.closed = False
        # the rooms
        self.nvram = Nvram(self)
        self.startup = Startup(self)
        self.volumes = Volumes(self)
        self.drive_events = DriveEvents(self)
        self.background = Background(self)
        self.expansion = Expansion(self)
        self.provisioning = Provisioning(self)
        self.faults = Faults(self)
        self.accel = Accelerator(self)
        self.rso_link = RsoLink(self)
        self.alua_link = AluaLink(self)
        self.pr_store = PrStore(self)
        self.views = Views(self)
        self.access = Access(self)
        self.enclosure.on_remap = self.drive_events.media_remapped
        nvram = self.nvram.load()
        self.alua_link.remember((nvram or {}).get("alua"))  # a save before the target exists keeps it
        # Recovery Server Option: settings and fence from NVRAM, wired to the log and the ALUA gate.
        self.rso = Rso(self.clock, on_event=self.rso_link.event, on_change=self.rso_link.changed)
        self.rso.load((nvram or {}).get("rso"))
        self.access.load((nvram or {}).get("access"))
        self.pr_store.load()  # APTPL reservations, restored as each logical drive attaches
        self.accel.open(nvram)
        self.intents = IntentLog(self.state_dir)
        self.member_journal = MemberJournal(self.state_dir)
        self.startup.open(nvram)
        self.startup.recover_interrupted_writes()
        serial = self.cfg.serial
        target_name = f"iqn.2003-04.com.hp:msa500.{serial.lower()}"
        self.identity = TargetIdentity(
            target_name=target_name,
            serial=serial,
            product=self.cfg.product,
            revision=self.cfg.firmware,
            port_names={p: f"{target_name},t,0x{p:04x}" for p in range(1, PORT_COUNT + 1)},
        )
        self.target = ScsiTarget(self.identity, self.clock)
        self.alua_link.load((nvram or {}).get("alua"))
        lun0 = ControllerUnit(serial, product=self.identity.product)
        register_rso_commands(lun0, self.rso, host_event=self.rso_link.event)
        self.target.add_lun(0, lun0)
        self.target.nexus_observer = self.rso_link.nexus
        self.access.apply()
        for lun in sorted(self.lds):
            self.volumes.attach_unit(self.lds[lun])
        self.volumes.refresh(quiet=True)
        self.accel.replay()  # before any logical drive answers a command
        self.accel.apply_mode(quiet=True)
        self.drive_events.activate_spares()  # commits: a new generation on every drive
        self.target.power_on()
        self.target.set_port_states(self.rso.port_states())
        self.log.emit(EventCode.CONTROLLER_STARTED, f"MSA500 {serial} firmware {self.cfg.firmware} started")

    # ============================================================ time
    def next_deadline(self) -> float | None:
        """When `advance` next has work to do (None: nothing pending): the soonest of the rooms'."""
        if self.closed or not self.accel.powered:
            return None
        due = [d for d in (self.background.next_deadline(), self.accel.next_deadline(), self.rso.next_deadline(),
                           self.target.alua_deadline()) if d is not None]
        return min(due) if due else None

    def advance(self, now: float) -> None:
        """Run what is due by `now` (a bounded amount of work per call)."""
        if self.closed or not self.accel.powered:
            return
        self.rso.advance(now)
        self.target.advance_alua(now)  # transitioning ports reach their new state
        self.accel.advance(now)
        self.background.advance(now)

    # ============================================================ views
    def describe(self) -> GlobalsView:
        return self.views.describe()

    def disks(self) -> list[DiskView]:
        return self.views.disks()

    def units(self) -> list[UnitView]:
        return self.views.units()

    def spares(self) -> list[SpareView]:
        return self.views.spares()

    def events(self, since_id: int = 0, limit: int | None = None) -> list[EventView]:
        return self.views.events(since_id, limit)

    def rebuild_progress(self, arr: ArrayRt) -> int | None:
        return self.background.rebuild_progress(arr)

    # ============================================================ provisioning
    def add_unit(self, lun: int, bays: list[int] | None = None, raid: str | int = "5",
                 stripe_kib: int | None = None, size_bytes: int | None = None,
                 name: str | None = None, array: str | None = None) -> UnitView:
        return self.provisioning.add_unit(lun, bays, raid, stripe_kib, size_bytes, name, array)

    def delete_unit(self, lun: int) -> None:
        self.provisioning.delete_unit(lun)
        self.access.unit_deleted(lun)
        self.pr_store.forget(lun)

    def add_spare(self, lun: int, bays: list[int]) -> None:
        self.provisioning.add_spare(lun, bays)

    def delete_spare(self, lun: int, bays: list[int]) -> None:
        self.provisioning.delete_spare(lun, bays)

    def expand_unit(self, lun: int, bays: list[int]) -> None:
        self.provisioning.expand_unit(lun, bays)

    def extend_unit(self, lun: int, size_bytes: int) -> None:
        self.provisioning.extend_unit(lun, size_bytes)

    def set_rebuild_priority(self, priority: str) -> None:
        self.provisioning.set_rebuild_priority(priority)

    # ============================================================ faults
    def fault_disk(self, bay: int, action: str, **kw: Any) -> DiskView:
        return self.faults.fault_disk(bay, action, **kw)

    def fault_psu(self, n: int, action: str) -> None:
        self.faults.fault_psu(n, action)

    def fault_fan(self, n: int, action: str) -> None:
        self.faults.fault_fan(n, action)

    def set_temperature(self, celsius: float) -> None:
        self.faults.set_temperature(celsius)

    def fault_link(self, port: int, action: str) -> dict[str, Any]:
        return self.faults.fault_link(port, action)

    # ============================================================ cache, battery, power
    @property
    def powered(self) -> bool:
        return self.accel.powered

    @property
    def data_lost(self) -> dict[int, int]:
        return self.accel.data_lost

    def set_cache(self, enabled: bool | None = None, ratio_read_percent: int | None = None,
                  size_mb: int | None = None, force_write_back: bool | None = None) -> dict[str, Any]:
        return self.accel.set_cache(enabled, ratio_read_percent, size_mb, force_write_back)

    def fault_battery(self, action: str) -> dict[str, Any]:
        return self.accel.fault_battery(action)

    def power_off(self, now: float | None = None) -> dict[str, Any]:
        return self.accel.power_off(now)

    def power_on(self, now: float | None = None) -> dict[str, Any]:
        return self.accel.power_on(now)

    def cache_stats(self) -> dict[str, Any]:
        return self.accel.stats()

    # ============================================================ host connections, ACLs
    def connections(self) -> dict[str, list[PortAccessView] | list[ConnectionView]]:
        return {"ports": self.access.ports(), "connections": self.access.connections()}

    def acl(self) -> list[AclView]:
        return self.access.acl_entries()

    def add_connection(self, name: str, iqn: str, port: int | None = None) -> ConnectionView:
        return self.access.add_connection(name, iqn, port)

    def delete_connection(self, name: str) -> None:
        self.access.delete_connection(name)

    def set_port_access(self, port: int, access: str) -> PortAccessView:
        return self.access.set_port_access(port, access)

    def add_acl(self, connection: str, lun: int) -> AclView:
        return self.access.add_acl(connection, lun)

    def delete_acl(self, connection: str, lun: int) -> None:
        self.access.delete_acl(connection, lun)

    # ============================================================ Recovery Server Option
    def rso_configure(self, enabled: bool, timeout_s: float | None = None,
                      act_alone: bool | None = None) -> dict[str, Any]:
        return self.rso_link.configure(enabled, timeout_s, act_alone)

    def rso_status(self) -> dict[str, Any]:
        return self.rso_link.status()

    def rso_failover(self) -> dict[str, Any]:
        return self.rso_link.failover()

    def rso_restore(self) -> dict[str, Any]:
        return self.rso_link.restore()

    # ============================================================ ALUA (target port groups)
    def alua_status(self) -> dict[str, Any]:
        return self.alua_link.status()

    def set_alua(self, transition_ms: float) -> dict[str, Any]:
        return self.alua_link.set_transition(transition_ms)

    def set_port_alua(self, port: int, state: str) -> dict[str, Any]:
        return self.alua_link.set_port(port, state)

    # ============================================================ lifecycle
    def flush(self) -> None:
        """Everything the cache holds to the drives, and the drives to stable storage."""
        if self.accel.powered:
            self.cache.destage_all()
        for d in self.enclosure.present():
            d.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.nvram.save()
        self.flush()
        self.cache.close()
        self.intents.close()
        self.member_journal.close()
        self.enclosure.close()
        self.closed = True
