"""Start-up: open the shelf a state directory holds, or build a new one from its spec.

The newest configuration generation (NVRAM or any drive's reserved area) is restored, the
foundation's version-1 NVRAM migrated, or the spec built onto blank drives; then the writes
the last stop interrupted are made consistent (write-intent log and member journal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..enclosure import Drive
from ..events import EventCode, Severity
from ..metadata import METADATA_BYTES, ArrayConfig, LdConfig, MetadataError, ShelfConfig
from ..raid.api import DriveError, MemberState, RaidLevel
from ..scsi.identity import naa5
from ..write_journal import NEW_LAYOUT, NO_ROW
from .errors import ShelfError
from .nvram import NVRAM_FORMAT
from .records import ArrayRt, LogicalDrive, RebuildPriority
from .spec import KIB, LunSpec, ShelfSpec, plan

if TYPE_CHECKING:
    from .core import Controller


class Startup:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def open(self, nvram: dict[str, Any] | None) -> None:
        c = self.c
        drives = c.enclosure.scan()
        if nvram is not None:
            c.next_drive = int(nvram.get("next_drive", 1))
        candidates: list[tuple[int, int, ShelfConfig]] = []
        if nvram is not None and nvram.get("format") == NVRAM_FORMAT:
            try:
                candidates.append((ShelfConfig.from_dict(nvram["config"]).generation, 1,
                                   ShelfConfig.from_dict(nvram["config"])))
            except (KeyError, TypeError, ValueError, AttributeError, MetadataError) as exc:
                raise ShelfError(f"controller NVRAM {c.nvram.path}: {exc}") from exc
        for d in drives:
            if d.present:
                rec = d.read_record()
                if rec is not None and rec.config is not None:
                    candidates.append((rec.config.generation, 0, rec.config))
        if candidates:
            candidates.sort(key=lambda x: (x[0], x[1]))
            c.cfg = candidates[-1][2]
            try:
                self.restore(nvram)
            except (KeyError, TypeError, ValueError, IndexError) as exc:  # parts that do not fit together
                src = f"controller NVRAM {c.nvram.path}" if candidates[-1][1] else "the drives' metadata"
                raise ShelfError(f"configuration generation {c.cfg.generation} from {src} cannot be "
                                 f"restored: {type(exc).__name__}: {exc}") from exc
            c.log.emit(EventCode.CONFIG_RESTORED,
                       f"configuration generation {c.cfg.generation} restored: "
                       f"{len(c.arrays)} arrays, {len(c.lds)} logical drives")
        elif nvram is not None and nvram.get("format") == 1:
            self.migrate_v1(nvram)
        else:
            self.build(c.spec)

    def build(self, spec: ShelfSpec) -> None:
        c = self.c
        try:
            spec.validate()
        except ShelfError:
            raise
        planned = plan(spec)
        c.access.build(spec.connections)
        c.cfg = ShelfConfig(serial=spec.serial, product=spec.product, firmware=spec.firmware,
                            rebuild_priority=RebuildPriority(spec.rebuild_priority).value)
        for bay, size in enumerate(spec.drive_bytes, 1):
            if size:
                old = c.enclosure.bays.get(bay)
                if old is not None:  # a stale image without any configuration: start over
                    c.enclosure.discard(bay)
                d = c.enclosure.new_drive(bay, size, "", 0)
                c.drive_events.identify_blank(d)
        arrays, _ = spec.layout()
        for a in arrays:
            members = [self.bay_drive(b) for b in a.bays]
            acfg = ArrayConfig(a.name, [d.serial for d in members], list(a.bays),
                               min(d.data_bytes for d in members),
                               [self.bay_drive(b).serial for b in a.spares])
            c.cfg.arrays.append(acfg)
            c.arrays[a.name] = ArrayRt(acfg, members)
            for p in planned[a.name]:
                ldc = LdConfig(p.spec.lun, p.spec.name or f"Logical Drive {p.spec.lun}", a.name,
                               p.level.value, p.stripe_unit // KIB, p.base, p.num_blocks)
                c.cfg.lds.append(ldc)
                ld = LogicalDrive(ldc)
                c.lds[ldc.lun] = ld
                c.volumes.make(ld)
        c.log.emit(EventCode.CONFIG_CREATED,
                   f"new shelf {spec.serial}: {len(c.arrays)} arrays, {len(c.lds)} logical drives")

    def migrate_v1(self, nvram: dict[str, Any]) -> None:
        """The foundation's NVRAM: each LUN straight on one bay = single-drive RAID 0 arrays."""
        c = self.c
        luns = [LunSpec(**raw) for raw in nvram.get("luns", [])]
        spec = ShelfSpec(serial=str(nvram["serial"]), drive_bytes=[int(x) for x in nvram["drive_bytes"]],
                         luns=luns, product=str(nvram.get("product", "MSA500")),
                         firmware=str(nvram.get("firmware", "2.10")))
        planned = plan(spec)
        c.cfg = ShelfConfig(serial=spec.serial, product=spec.product, firmware=spec.firmware)
        for bay, size in enumerate(spec.drive_bytes, 1):
            d = c.enclosure.bays.get(bay)
            if d is None and size:
                d = c.enclosure.new_drive(bay, size, "", 0)
            if d is not None and d.blank:
                c.drive_events.identify_blank(d)
        arrays, _ = spec.layout()
        for a in arrays:
            members = [self.bay_drive(b) for b in a.bays]
            acfg = ArrayConfig(a.name, [d.serial for d in members], list(a.bays),
                               min(d.data_bytes for d in members))
            c.cfg.arrays.append(acfg)
            c.arrays[a.name] = ArrayRt(acfg, members)
            for p in planned[a.name]:
                ldc = LdConfig(p.spec.lun, p.spec.name, a.name, RaidLevel.RAID0.value,
                               p.stripe_unit // KIB, p.base, p.num_blocks)
                c.cfg.lds.append(ldc)
                c.lds[ldc.lun] = LogicalDrive(ldc)
                c.volumes.make(c.lds[ldc.lun])
        c.log.emit(EventCode.CONFIG_RESTORED, "foundation NVRAM migrated: one RAID 0 array per bay")

    def bay_drive(self, bay: int) -> Drive:
        c = self.c
        d = c.enclosure.bays.get(bay)
        if d is None:
            raise ShelfError(f"bay {bay} has no drive")
        return d

    def restore(self, nvram: dict[str, Any] | None) -> None:
        c = self.c
        cfg = c.cfg
        failed = set(cfg.failed)
        for d in c.enclosure.present():
            if d.blank:
                c.drive_events.identify_blank(d)
        for d in [*c.enclosure.present(), *c.enclosure.aside.values()]:
            d.failed = d.serial in failed
        c.faults.load(nvram)
        for acfg in cfg.arrays:
            members: list[Drive] = []
            for i, serial in enumerate(acfg.members):
                found = c.enclosure.find(serial)
                if found is not None:
                    d = found
                else:  # gone for good: a placeholder keeps the slot failed
                    d = Drive(c.state_dir / f"absent-{serial}.img", serial, naa5("drive:" + serial),
                              acfg.member_bytes + METADATA_BYTES)
                    d.blank = False
                if serial in cfg.rebuilding:
                    d.member_state = MemberState.REBUILDING
                    # NVRAM is written every few steps; the mapped watermark after every one
                    d.rebuilt_to = max(cfg.rebuilding[serial], c.intents.mark(serial) or 0)
                if d.bay is not None and d.bay != acfg.home_bays[i]:
                    c.log.emit(EventCode.DRIVE_MOVED,
                               f"drive {serial} of array {acfg.name} found in bay {d.bay} "
                               f"(was bay {acfg.home_bays[i]})", bay=d.bay, array=acfg.name)
                    acfg.home_bays[i] = d.bay
                members.append(d)
            c.arrays[acfg.name] = ArrayRt(acfg, members)
        for ldc in cfg.lds:
            ld = LogicalDrive(ldc)
            c.lds[ldc.lun] = ld
            c.volumes.make(ld)
        for arr in c.arrays.values():
            if arr.cfg.expand is not None:
                c.expansion.resume(arr)
            if arr.cfg.copyback:
                target = c.enclosure.find(arr.cfg.copyback)
                slot = arr.cfg.copyback_slot
                if (target is not None and target.present and not target.failed and 0 <= slot < len(arr.members)
                    and arr.members[slot].serial in arr.cfg.spares):
                    c.background.begin_copyback(arr, slot, target, max(cfg.rebuilding.get(target.serial, 0),
                                                                       c.intents.mark(target.serial) or 0))
                else:
                    arr.cfg.copyback, arr.cfg.copyback_slot = "", -1

    def recover_interrupted_writes(self) -> None:
        """Writes under way when the process stopped: apply a complete member journal again, and
        make the rows of every other interrupted write consistent from their data."""
        c = self.c
        replayed: set[int] = set()
        journal = c.member_journal.pending()
        if journal is not None:
            lun, writes = journal
            for serial, off, data in writes:
                d = c.enclosure.find(serial)
                if d is not None and d.present and not d.failed:
                    try:
                        d.write(off, data)
                    except (DriveError, OSError):
                        pass  # that drive fails at its next use
            c.member_journal.clear()
            replayed.add(lun)
        intents = c.intents.pending()
        for lun, lba, count, row in intents:
            ld = c.lds.get(lun)
            if ld is None or ld.cfg.failed or lun in replayed or lba + count > ld.cfg.num_blocks:
                continue
            if row == NO_ROW:
                continue  # it had touched no member: its rows hold what they held
            if row is None:
                c.volumes.resync_after(ld, lba, count)  # how far it got is unknown: all its rows
                continue
            start, end = row[0] & ~NEW_LAYOUT, row[1]
            vol = ld.new_volume if row[0] & NEW_LAYOUT and ld.new_volume is not None else ld.volume
            c.volumes.resync_rows(vol, ld, [(start - vol.base_offset, end - vol.base_offset)])
        c.intents.clear()
        if journal is not None or intents:
            c.log.emit(EventCode.WRITES_RECOVERED,
                       f"{len(intents)} writes interrupted by the stop made consistent"
                       + (f" ({len(journal[1])} journalled member writes applied again)" if journal else ""),
                       severity=Severity.INFO)
        if c.volumes.lost_pending:
            c.volumes.lost_found("the recovery of writes interrupted by the stop")
