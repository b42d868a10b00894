"""What the management layer shows: SHOW GLOBALS, DISKS, UNITS, SPARES and the event log.

Each view is a TypedDict: the JSON the API returns, with its fields' names and types declared
once, for the CLI's renderer, the web panel and users' scripts alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from ..cache import LINE_BYTES
from ..enclosure import BAY_COUNT, Drive, DriveState
from ..operations import PORT_COUNT
from ..raid.api import MemberState
from .records import UnitState
from .spec import BLOCK_SIZE, raid_label

if TYPE_CHECKING:
    from .core import Controller


class LdSummary(TypedDict):
    lun: int
    blocks: int
    block_size: int
    bytes: int
    state: str


class GlobalsView(TypedDict):
    """SHOW GLOBALS."""

    product: str
    serial: str
    firmware: str
    target_name: str
    cache_bytes: int
    bays: int
    ports: int
    drives: int
    arrays: int
    logical_drive_count: int
    temperature_c: float
    power_supplies: list[str]
    fans: list[str]
    rebuild_priority: str
    generation: int
    logical_drives: list[LdSummary]
    state_dir: str
    powered: bool
    cache: dict[str, Any]
    battery: dict[str, Any]
    rso: dict[str, Any]


class MediaErrorView(TypedDict):
    lba: int
    count: int


class DiskView(TypedDict):
    """One bay of SHOW DISKS; an empty bay has only `bay` and `state`."""

    bay: int
    state: str  # a DriveState value, or "empty"
    size_bytes: NotRequired[int]
    serial: NotRequired[str]
    wwid: NotRequired[str]
    role: NotRequired[str]  # member, spare, unassigned
    array: NotRequired[str | None]
    media_errors: NotRequired[list[MediaErrorView]]
    latency_ms: NotRequired[float]
    rebuild_percent: NotRequired[int | None]
    io_reads: NotRequired[int]  # since the emulator started: the front panel's activity LED
    io_writes: NotRequired[int]
    io_bytes: NotRequired[int]


class UnitView(TypedDict):
    """One logical drive of SHOW UNITS."""

    lun: int
    name: str
    array: str
    raid: str
    stripe_kib: int
    size_bytes: int
    blocks: int
    block_size: int
    state: str  # a UnitState value
    rebuild_percent: int | None
    expand_percent: int | None
    fault_tolerance: int
    lost_blocks: int
    bays: list[int | None]
    spares: list[int | None]
    base_offset: int
    powered: bool


class SpareView(TypedDict):
    """One online spare of SHOW SPARES."""

    serial: str
    bay: int | None
    arrays: list[str]
    luns: list[int]
    state: str  # standby, active, failed, missing
    replacing_in: str | None


class EventView(TypedDict):
    """One event of the log (firmware_model.events.Event)."""

    id: int
    time: float
    monotonic: float
    severity: str
    code: str
    message: str
    bay: int | None
    array: str | None
    lun: int | None


class Views:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def describe(self) -> GlobalsView:
        """The SHOW GLOBALS facts."""
        c = self.c
        enc = c.enclosure
        present = enc.present()
        return {
            "product": c.identity.product,
            "serial": c.identity.serial,
            "firmware": c.identity.revision,
            "target_name": c.identity.target_name,
            "cache_bytes": c.cache.slots * LINE_BYTES,
            "bays": BAY_COUNT,
            "ports": PORT_COUNT,
            "drives": len(present),
            "arrays": len(c.arrays),
            "logical_drive_count": len(c.lds),
            "temperature_c": enc.temperature_c,
            "power_supplies": [s.value for s in enc.psus],
            "fans": [s.value for s in enc.fans],
            "rebuild_priority": c.cfg.rebuild_priority,
            "generation": c.cfg.generation,
            "logical_drives": [
                {"lun": lun, "blocks": ld.cfg.num_blocks, "block_size": BLOCK_SIZE,
                 "bytes": ld.size_bytes, "state": ld.state.value}
                for lun, ld in sorted(c.lds.items())
            ],
            "state_dir": str(c.state_dir),
            "powered": c.accel.powered,
            "cache": c.accel.stats(),
            "battery": c.battery.describe(c.clock.now()),
            "rso": c.rso.status(),
        }

    def role(self, d: Drive) -> tuple[str, str | None]:
        c = self.c
        hit = c.drive_events.array_of(d)
        if hit is not None:
            return "member", hit[0].name
        for arr in c.arrays.values():
            if arr.copy_target is d:
                return "member", arr.name  # taking its slot back from the spare
            if d.failed and d.bay is not None:
                # a failed drive whose slot a spare holds is still a (failed) member of its array
                for slot, m in enumerate(arr.members):
                    if arr.cfg.home_bays[slot] == d.bay and m.bay != d.bay:
                        return "member", arr.name
        spares = c.drive_events.spare_arrays(d.serial)
        if spares:
            return "spare", ",".join(spares)
        return "unassigned", None

    def drive_state(self, d: Drive, role: str) -> DriveState:
        if d.failed:
            return DriveState.FAILED
        if not d.present:
            return DriveState.MISSING
        if d.member_state is MemberState.REBUILDING and role == "member":
            return DriveState.REBUILDING
        if d.predictive:
            return DriveState.PREDICTIVE
        if role == "spare":
            return DriveState.SPARE
        return DriveState.OK

    def disks(self) -> list[DiskView]:
        c = self.c
        out: list[DiskView] = []
        missing: dict[int, Drive] = {}
        for arr in c.arrays.values():
            for i, d in enumerate(arr.members):
                if not d.present:
                    missing.setdefault(arr.cfg.home_bays[i], d)
        for bay in range(1, BAY_COUNT + 1):
            found = c.enclosure.bays[bay] or missing.get(bay)
            if found is None:
                out.append({"bay": bay, "state": "empty"})
                continue
            d = found
            role, array = self.role(d)
            out.append({
                "bay": bay,
                "state": self.drive_state(d, role).value,
                "size_bytes": d.size_bytes,
                "serial": d.serial,
                "wwid": f"{d.wwid:016x}",
                "role": role,
                "array": array,
                "media_errors": [
                    {"lba": e.offset // BLOCK_SIZE, "count": e.length // BLOCK_SIZE} for e in d.media_errors
                ],
                "latency_ms": d.latency_ms,
                "rebuild_percent": (min(99, d.rebuilt_to * 100 // max(1, c.volumes.array_end(array)))
                                    if role == "member" and array and d.member_state is MemberState.REBUILDING
                                    else None),
                "io_reads": d.io_reads,
                "io_writes": d.io_writes,
                "io_bytes": d.io_bytes,
            })
        return out

    def units(self) -> list[UnitView]:
        c = self.c
        out: list[UnitView] = []
        for lun in sorted(c.lds):
            ld = c.lds[lun]
            arr = c.arrays[ld.cfg.array]
            rebuild = c.background.rebuild_progress(arr)
            expand = (min(99, int(c.expansion.fraction(arr) * 100)) if arr.cfg.expand is not None else None)
            out.append({
                "lun": lun,
                "name": ld.cfg.name,
                "array": arr.name,
                "raid": raid_label(ld.level),
                "stripe_kib": ld.cfg.stripe_kib,
                "size_bytes": ld.size_bytes,
                "blocks": ld.cfg.num_blocks,
                "block_size": BLOCK_SIZE,
                "state": ld.state.value,
                "rebuild_percent": rebuild if ld.state is UnitState.REBUILDING else None,
                "expand_percent": expand,
                "fault_tolerance": 0 if ld.state is UnitState.FAILED else ld.volume.fault_tolerance(),
                "lost_blocks": ld.lost.total,
                "bays": c.volumes.member_bays(arr),
                "spares": [self.spare_bay(s) for s in arr.cfg.spares],
                "base_offset": ld.cfg.base_offset,
                "powered": c.accel.powered,  # off: the unit answers hosts NOT READY, whatever its state
            })
        return out

    def spare_bay(self, serial: str) -> int | None:
        c = self.c
        d = c.enclosure.find(serial)
        return d.bay if d is not None else None

    def spares(self) -> list[SpareView]:
        c = self.c
        out: list[SpareView] = []
        serials: list[str] = []
        for arr in c.arrays.values():
            for s in arr.cfg.spares:
                if s not in serials:
                    serials.append(s)
        in_use = {d.serial: a.name for a in c.arrays.values() for d in a.members}
        for s in serials:
            d = c.enclosure.find(s)
            out.append({
                "serial": s,
                "bay": d.bay if d is not None else None,
                "arrays": c.drive_events.spare_arrays(s),
                "luns": sorted(ld.cfg.lun for ld in c.lds.values() if s in c.arrays[ld.cfg.array].cfg.spares),
                "state": ("missing" if d is None or not d.present else "failed" if d.failed
                          else "active" if s in in_use else "standby"),
                "replacing_in": in_use.get(s),
            })
        return out

    def events(self, since_id: int = 0, limit: int | None = None) -> list[EventView]:
        return cast("list[EventView]", self.c.log.events(since_id, limit))
