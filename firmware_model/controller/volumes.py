"""Logical drives as volumes: their RaidVolumes and SCSI units, their states, and what their
I/O tells the controller (the `IoFaults` of ld_volume: failed members, lost blocks, the
write-intent record, rows to make consistent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cache import LINE_BYTES, CachedVolume
from ..enclosure import Drive
from ..events import EventCode, Severity
from ..raid.api import DriveError, MemberState, RaidLevel, VolumeFailed
from ..raid.volume import RaidVolume, resync_untrusted
from ..scsi.sbc import BlockUnit
from .ld_volume import LdVolume
from .records import ArrayRt, JournalView, LogicalDrive, MemberErr, UnitState
from .spec import BLOCK_SIZE

if TYPE_CHECKING:
    from .core import Controller


class Volumes:
    """Builds each logical drive's volumes and unit, keeps unit states, and is their IoFaults."""

    def __init__(self, c: Controller) -> None:
        self.c = c
        self.pending_member_errors: list[MemberErr] = []
        self.lost_pending: list[tuple[int, int, int]] = []  # (lun, lba, count) not yet in the event log
        self.intent_slot = -1  # the write-intent record of the host write under way

    # ------------------------------------------------------------------ building
    def make(self, ld: LogicalDrive) -> None:
        """(Re)build a logical drive's RaidVolume(s) from its array and any expansion under way."""
        arr = self.c.arrays[ld.cfg.array]
        exp = arr.cfg.expand
        members = arr.members
        ld.new_volume = None
        ld.moved_blocks = 0
        if exp is not None:
            el = next((x for x in exp.lds if x.lun == ld.cfg.lun), None)
            if el is not None and not el.done:
                old = members[: exp.old_count]
                ld.volume = self.raid(arr, RaidLevel(el.old_raid), old, ld, el.old_base)
                if el.watermark > 0:
                    ld.new_volume = self.raid(arr, RaidLevel(el.new_raid), members, ld, el.new_base)
                    ld.moved_blocks = el.watermark // BLOCK_SIZE
                return
        ld.volume = self.raid(arr, ld.level, members, ld, ld.cfg.base_offset)

    def raid(self, arr: ArrayRt, level: RaidLevel, members: list[Drive], ld: LogicalDrive,
             base: int) -> RaidVolume:
        name = arr.name
        c = self.c

        def on_error(slot: int, err: DriveError) -> None:
            self.pending_member_errors.append(MemberErr(name, slot, err))

        def on_lost(lba: int, count: int) -> None:
            if ld.lost.add(lba, count):
                self.lost_pending.append((ld.cfg.lun, lba, count))
                c.nvram.save()  # before the engine settles the blocks (see RaidVolume._settle)

        vol = RaidVolume(level, members, ld.stripe_unit, ld.cfg.num_blocks,  # type: ignore[arg-type]
                         BLOCK_SIZE, base, on_member_error=on_error, on_lost=on_lost)
        vol.journal = JournalView(c.member_journal, ld.cfg.lun, members)
        vol.on_row = lambda start, end: c.intents.row(self.intent_slot, start, end, vol is ld.new_volume)
        return vol

    def remake(self, arr: ArrayRt) -> None:
        """New RaidVolumes after a member slot changed hands."""
        for ld in self.extents(arr):
            self.make(ld)

    def attach_unit(self, ld: LogicalDrive) -> None:
        c = self.c
        ld.view = LdVolume(self, ld)
        ld.unit = BlockUnit(CachedVolume(c.cache, ld.cfg.lun, ld.view),
                            ld.cfg.name or f"Logical Drive {ld.cfg.lun}",
                            f"{c.cfg.serial}L{ld.cfg.lun:02d}", cache_bytes=c.cache.slots * LINE_BYTES)
        if not c.cache.write_back:
            ld.unit.mode.set_write_cache_available(False)
        c.target.add_lun(ld.cfg.lun, ld.unit)
        c.pr_store.attach(ld.unit)  # its APTPL reservations, and a watch that keeps them

    # ------------------------------------------------------------------ where things are
    def extents(self, arr: ArrayRt) -> list[LogicalDrive]:
        """The array's logical drives in the order they sit on its members."""
        return sorted((ld for ld in self.c.lds.values() if ld.cfg.array == arr.name),
                      key=lambda ld: ld.cfg.base_offset)

    def array_end(self, name: str) -> int:
        """Where the last logical drive of array `name` ends on each member."""
        arr = self.c.arrays.get(name)
        if arr is None:
            return 1
        return max((ld.cfg.base_offset + ld.volume.per_member_bytes for ld in self.extents(arr)), default=1)

    @staticmethod
    def member_bays(arr: ArrayRt) -> list[int | None]:
        return [d.bay for d in arr.members]

    # ------------------------------------------------------------------ states
    def state_of(self, ld: LogicalDrive, arr: ArrayRt) -> UnitState:
        if ld.cfg.failed:
            return UnitState.FAILED
        vols = [ld.volume] + ([ld.new_volume] if ld.new_volume is not None else [])
        st = "ok"
        for v in vols:
            s = v.state()
            if s == "failed":
                return UnitState.FAILED
            if s == "degraded":
                st = "degraded"
        exp = arr.cfg.expand
        if exp is not None:
            # members beyond the old ones are not in the old view: count them too
            extra = arr.members[exp.old_count :]
            if any(d.state is not MemberState.OK for d in extra):
                st = "degraded"
        if st == "degraded":
            if any(d.state is MemberState.FAILED for d in arr.members):
                return UnitState.INTERIM_RECOVERY
            return UnitState.REBUILDING
        if exp is not None:
            return UnitState.EXPANDING
        return UnitState.OK

    def refresh(self, quiet: bool = False) -> bool:
        """Recompute every logical drive's state; log and flag changes. True if any changed."""
        c = self.c
        changed = False
        for lun in sorted(c.lds):
            ld = c.lds[lun]
            arr = c.arrays[ld.cfg.array]
            new = self.state_of(ld, arr)
            if new is UnitState.FAILED and not ld.cfg.failed:
                ld.cfg.failed = True
                changed = True
            if ld.unit is not None:
                ld.unit.not_ready_reason = c.accel.not_ready(new)
            if new is not ld.state:
                old = ld.state
                ld.state = new
                if not quiet:
                    if new is UnitState.FAILED:
                        c.log.emit(EventCode.UNIT_FAILED,
                                   f"logical drive {lun} ({ld.cfg.name}) failed: too many drives of "
                                   f"array {arr.name} lost", lun=lun, array=arr.name)
                    else:
                        sev = Severity.INFO if new in (UnitState.OK, UnitState.EXPANDING) else Severity.WARNING
                        c.log.emit(EventCode.UNIT_STATUS,
                                   f"logical drive {lun} status {old.value} -> {new.value}",
                                   lun=lun, array=arr.name, severity=sev)
                changed = True
        return changed

    # ------------------------------------------------------------------ consistency
    def resync_after(self, ld: LogicalDrive, lba: int, count: int) -> None:
        """Recompute the redundancy of the rows that logical blocks [lba, lba+count) touch."""
        parts = [(ld.volume, lba, count)]
        if ld.new_volume is not None and lba < ld.moved_blocks:
            split = min(lba + count, ld.moved_blocks)
            parts = [(ld.new_volume, lba, split - lba)] + ([(ld.volume, split, lba + count - split)]
                                                           if split < lba + count else [])
        for vol, a, n in parts:
            # exactly the member rows the write touched (a row elsewhere keeps its trusted parity)
            rows: list[list[int]] = []
            for pc in sorted(vol.layout.pieces(a * BLOCK_SIZE, n * BLOCK_SIZE), key=lambda p: p.member_offset):
                if rows and pc.member_offset <= rows[-1][1]:
                    rows[-1][1] = max(rows[-1][1], pc.member_offset + pc.length)
                else:
                    rows.append([pc.member_offset, pc.member_offset + pc.length])
            self.resync_rows(vol, ld, [(lo, hi) for lo, hi in rows])

    def resync_rows(self, vol: RaidVolume, ld: LogicalDrive, rows: list[tuple[int, int]]) -> None:
        """Recompute the redundancy of extent rows [lo, hi) of `vol` from their data alone."""
        c = self.c
        copy_target = c.arrays[ld.cfg.array].copy_target
        for lo, hi in rows:
            if not 0 <= lo < hi <= vol.per_member_bytes:
                continue
            try:
                resync_untrusted(vol, lo, hi - lo)
            except (VolumeFailed, DriveError):
                break  # the unit has failed: nothing to keep consistent
            if copy_target is not None:  # the spare and its copy may disagree there: copy again
                copy_target.rebuilt_to = min(copy_target.rebuilt_to, vol.base_offset + lo)
                c.intents.set_mark(copy_target.serial, copy_target.rebuilt_to)

    # ------------------------------------------------------------------ IoFaults
    def write_begins(self, lun: int, lba: int, count: int) -> int:
        slot = self.c.intents.begin(lun, lba, count)
        self.intent_slot = slot
        return slot

    def write_left(self) -> None:
        self.intent_slot = -1

    def write_failed(self, ld: LogicalDrive, lba: int, count: int, slot: int) -> None:
        self.intent_slot = -1
        self.resync_after(ld, lba, count)
        self.c.intents.end(slot)

    def write_done(self, ld: LogicalDrive, lba: int, count: int, slot: int) -> None:
        self.c.intents.end(slot)
        if self.lost_pending:
            self.lost_found("a write to the same stripe row")
        if ld.lost:
            self.lost_healed(ld, lba, count)
        if self.pending_member_errors:
            self.handle_member_errors()

    def io_failed(self, ld: LogicalDrive) -> None:
        if self.pending_member_errors:
            self.handle_member_errors()
        if self.refresh():
            self.c.nvram.commit()

    def handle_member_errors(self) -> None:
        """Members that failed a write during host I/O: mark them failed (Smart Array does)."""
        c = self.c
        errs, self.pending_member_errors = self.pending_member_errors, []
        for e in errs:
            arr = c.arrays.get(e.array)
            if arr is None or e.slot >= len(arr.members):
                continue
            d = arr.members[e.slot]
            if d.present and not d.failed:
                d.failed = True
                c.log.emit(EventCode.DRIVE_FAILED,
                           f"drive {d.serial} in bay {d.bay} failed a write ({e.error.why})",
                           bay=d.bay, array=arr.name)
                c.drive_events.drive_lost(d)
        c.nvram.commit()

    def lost_found(self, during: str) -> None:
        """Log the blocks the RAID engine just recorded as lost (one event per range) and keep
        the list in NVRAM with the rest of the configuration."""
        c = self.c
        pending, self.lost_pending = self.lost_pending, []
        if pending:
            spans: dict[int, list[tuple[int, int]]] = {}
            for lun, lba, n in sorted(pending):
                runs = spans.setdefault(lun, [])
                if runs and lba <= runs[-1][1]:
                    runs[-1] = (runs[-1][0], max(runs[-1][1], lba + n))
                else:
                    runs.append((lba, lba + n))
            for lun, runs in spans.items():
                ld = c.lds[lun]
                shown = runs[:8]
                more = f" and {len(runs) - 8} more ranges" if len(runs) > 8 else ""
                c.log.emit(EventCode.BLOCKS_LOST,
                           f"logical drive {lun}: "
                           + ", ".join(f"LBA {a}-{b - 1} ({b - a} blocks)" for a, b in shown) + more
                           + f" could not be reconstructed during {during}; they read as MEDIUM ERROR "
                           f"until written ({ld.lost.total} lost blocks in all)",
                           lun=lun, array=ld.cfg.array)
            c.nvram.save()
        if self.pending_member_errors:
            self.handle_member_errors()

    def lost_healed(self, ld: LogicalDrive, lba: int, count: int) -> None:
        healed = ld.lost.heal(lba, count)
        if healed:
            self.c.log.emit(EventCode.BLOCKS_HEALED,
                            f"logical drive {ld.cfg.lun}: {healed} lost blocks in LBA {lba}-{lba + count - 1} "
                            f"written again ({ld.lost.total} lost blocks remain)",
                            lun=ld.cfg.lun, array=ld.cfg.array, severity=Severity.INFO)
            self.c.nvram.save()
