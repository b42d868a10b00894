"""Drive events: a drive failed, was pulled or arrived; spares activated; new drives named.

A lost member degrades or fails its logical drives or brings in a spare (rebuild); an inserted
drive is rebuilt onto, taken back (its data unchanged), copied back onto from the spare that
holds its slot, or left unassigned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..enclosure import Drive
from ..events import EventCode, Severity
from ..metadata import DriveRecord
from ..raid.api import MemberState, RaidLevel
from ..scsi.identity import naa5
from .records import ArrayRt

if TYPE_CHECKING:
    from .core import Controller


class DriveEvents:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def new_serial(self) -> str:
        c = self.c
        taken = {d.serial for d in c.enclosure.present()} | set(c.enclosure.aside)
        while True:
            serial = f"3HX{c.cfg.serial[-4:].upper()}{c.next_drive:05d}"
            c.next_drive += 1
            if serial not in taken:
                return serial

    def identify_blank(self, drive: Drive) -> None:
        """Give a factory-fresh drive a serial and WWID (its vendor identity) and record it."""
        if not drive.serial:
            drive.serial = self.new_serial()
        if not drive.wwid:
            drive.wwid = naa5("drive:" + drive.serial)
        drive.write_record(DriveRecord(drive.serial, drive.wwid, drive.size_bytes, None))


    def array_of(self, drive: Drive) -> tuple[ArrayRt, int] | None:
        c = self.c
        for arr in c.arrays.values():
            for i, d in enumerate(arr.members):
                if d is drive or (d.serial == drive.serial and drive.serial):
                    return arr, i
        return None

    def spare_arrays(self, serial: str) -> list[str]:
        c = self.c
        return [a.name for a in c.arrays.values() if serial in a.cfg.spares]


    def drive_lost(self, drive: Drive) -> None:
        """A drive failed or was pulled: degrade, fail or activate a spare."""
        c = self.c
        for arr in c.arrays.values():
            if arr.copy_target is drive:
                c.background.end_copyback(arr, f"drive {drive.serial} is gone")
            elif arr.copy_target is not None and arr.members[arr.cfg.copyback_slot] is drive:
                # the spare went: what the new drive already holds is a rebuild begun
                target, slot = arr.copy_target, arr.cfg.copyback_slot
                c.background.end_copyback(arr, f"spare {drive.serial} is gone; rebuilding onto drive {target.serial}",
                                          keep_target=True)
                arr.members[slot] = target
                arr.cfg.members[slot] = target.serial
                c.volumes.remake(arr)
                self.rebuild_started(arr, target)
        hit = self.array_of(drive)
        if hit is not None:
            arr = hit[0]
            if drive.member_state is MemberState.REBUILDING:
                c.log.emit(EventCode.REBUILD_ABORTED,
                           f"rebuild of array {arr.name} onto drive {drive.serial} stopped: the drive is gone",
                           array=arr.name, bay=drive.bay)
                drive.member_state = MemberState.OK
                drive.rebuilt_to = 0
        c.volumes.refresh()
        self.activate_spares()


    def media_remapped(self, drive: Drive) -> None:
        """A write remapped media errors of a drive: keep the smaller fault list now, before the
        data lands, or a restart would bring the error back over the new data."""
        c = self.c
        if not c.closed and hasattr(c, "cfg"):
            c.nvram.save()


    def usable_spare(self, arr: ArrayRt) -> Drive | None:
        c = self.c
        in_use = {d.serial for a in c.arrays.values() for d in a.members}
        for serial in arr.cfg.spares:
            d = c.enclosure.find(serial)
            if (d is not None and d.present and not d.failed and serial not in in_use
                and d.data_bytes >= arr.cfg.member_bytes):
                return d
        return None

    def activate_spares(self) -> None:
        c = self.c
        for arr in c.arrays.values():
            if arr.cfg.expand is not None:
                continue  # Smart Array finishes the expansion first
            for slot, d in enumerate(arr.members):
                if d.state is not MemberState.FAILED:
                    continue
                lds = [ld for ld in c.lds.values() if ld.cfg.array == arr.name and not ld.cfg.failed]
                if not any(ld.level is not RaidLevel.RAID0 for ld in lds):
                    continue  # nothing that a rebuild could save
                spare = self.usable_spare(arr)
                if spare is None:
                    continue
                self.take_slot(arr, slot, spare)
                c.log.emit(EventCode.SPARE_ACTIVATED,
                           f"spare {spare.serial} in bay {spare.bay} replaces drive {d.serial} "
                           f"(bay {arr.cfg.home_bays[slot]}) in array {arr.name}",
                           bay=spare.bay, array=arr.name)
                c.volumes.remake(arr)
                self.rebuild_started(arr, spare)
        c.volumes.refresh()
        c.nvram.commit()

    def take_slot(self, arr: ArrayRt, slot: int, drive: Drive) -> None:
        """`drive` (a spare, or a new drive in the failed member's bay) takes a failed member's
        slot and is to be rebuilt from the start."""
        self.slot_replaced(arr)
        arr.members[slot] = drive
        arr.cfg.members[slot] = drive.serial
        drive.member_state = MemberState.REBUILDING
        drive.rebuilt_to = 0
        arr.rebuild_pct = -1

    def slot_replaced(self, arr: ArrayRt) -> None:
        """A failed member's slot goes to another drive: a failed unit that cannot be rebuilt
        (RAID 0) has lost that drive's part for good and never re-enables by itself."""
        c = self.c
        for ld in c.volumes.extents(arr):
            if ld.cfg.failed and ld.level is RaidLevel.RAID0:
                ld.cfg.gone = True

    def _remake(self, arr: ArrayRt) -> None:
        """New RaidVolumes after a member slot changed hands."""
        c = self.c
        for ld in c.volumes.extents(arr):
            c.volumes.make(ld)

    def rebuild_started(self, arr: ArrayRt, drive: Drive) -> None:
        c = self.c
        arr.rebuild_pct = 0
        c.intents.set_mark(drive.serial, drive.rebuilt_to)
        c.log.emit(EventCode.REBUILD_STARTED,
                   f"array {arr.name}: rebuilding onto drive {drive.serial} in bay {drive.bay}",
                   bay=drive.bay, array=arr.name)
        c.background.wake()

    def drive_arrived(self, drive: Drive, blank: bool) -> None:
        """A drive was inserted: rebuild onto it, take it back, or leave it unassigned."""
        c = self.c
        bay = drive.bay
        assert bay is not None
        if blank:
            self.identify_blank(drive)
            for arr in c.arrays.values():
                if arr.cfg.expand is not None:
                    continue
                for slot, d in enumerate(arr.members):
                    if arr.cfg.home_bays[slot] != bay:
                        continue
                    spare_held = d.bay != bay and d.serial in arr.cfg.spares and d.state is not MemberState.FAILED
                    if spare_held:  # the spare keeps the slot until the new drive holds everything
                        c.background.start_copybacks()
                        return
                    if d.state is MemberState.FAILED:
                        if drive.data_bytes < arr.cfg.member_bytes:
                            return
                        self.take_slot(arr, slot, drive)
                        c.volumes.remake(arr)
                        self.rebuild_started(arr, drive)
                        return
            return
        hit = self.array_of(drive)
        if hit is None:
            c.background.start_copybacks()  # a configured drive back in its bay, or any drive: replaces a spare
        if hit is not None:
            arr, slot = hit
            arr.members[slot] = drive
            arr.cfg.home_bays[slot] = bay
            c.volumes.remake(arr)
            if drive.failed:
                return
            lds = [ld for ld in c.lds.values() if ld.cfg.array == arr.name]
            redundant = [ld for ld in lds if not ld.cfg.failed and ld.level is not RaidLevel.RAID0]
            if redundant:
                drive.member_state = MemberState.REBUILDING  # written meanwhile: bring it up to date
                drive.rebuilt_to = 0
                arr.rebuild_pct = -1
                self.rebuild_started(arr, drive)
            else:
                drive.member_state = MemberState.OK
                drive.rebuilt_to = 0
                for ld in lds:  # the drive came back: re-enable the RAID 0 units it took down, whose data
                    # it holds unchanged; a failed redundant unit stays failed (its spare may hold nothing)
                    # (not while the array expands: part of its data may be in the new layout's lost drives)
                    if ld.cfg.failed and ld.level is RaidLevel.RAID0 and not ld.cfg.gone and arr.cfg.expand is None:
                        c.volumes.make(ld)
                        if ld.volume.state() != "failed":
                            ld.cfg.failed = False
                            c.log.emit(EventCode.UNIT_STATUS,
                                       f"logical drive {ld.cfg.lun} re-enabled: drive {drive.serial} is back",
                                       lun=ld.cfg.lun, array=arr.name, severity=Severity.INFO)
