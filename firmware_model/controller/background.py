"""Background work: rebuild onto a spare or a replaced drive, and copy-back from a spare.

Work runs in bounded steps from `advance(now)`, paced by the rebuild priority; `next_deadline()`
says when the next step is due, so the asyncio process or a test on a virtual clock drives it.
One rebuild at a time, then copy-backs, then expansion steps (firmware_model.controller.expansion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..enclosure import Drive
from ..events import EventCode
from ..raid.api import DriveError, MemberState, RaidLevel, VolumeFailed
from .records import PACE, ArrayRt, LogicalDrive, RebuildPriority
from .spec import BLOCK_SIZE

if TYPE_CHECKING:
    from .core import Controller


class Background:
    def __init__(self, c: Controller) -> None:
        self.c = c
        self.next_step = 0.0
        self.steps_since_save = 0

    def wake(self) -> None:
        """New work: the next step is due now."""
        if self.next_step < self.c.clock.now():
            self.next_step = self.c.clock.now()

    def next_deadline(self) -> float | None:
        """When the next rebuild, copy-back or expansion step is due (None: no such work)."""
        return self.next_step if self.has_work() else None

    def has_work(self) -> bool:
        c = self.c
        for arr in c.arrays.values():
            if (arr.cfg.expand is not None or self.rebuilding_slot(arr) is not None
                or arr.copy_target is not None):
                return True
        return False

    @staticmethod
    def rebuilding_slot(arr: ArrayRt) -> int | None:
        """The member being rebuilt (one at a time; none while the array expands)."""
        if arr.cfg.expand is not None:
            return None
        for slot, d in enumerate(arr.members):
            if d.member_state is MemberState.REBUILDING and d.state is MemberState.REBUILDING:
                return slot
        return None

    def advance(self, now: float) -> None:
        """Run the background steps due by `now` (a bounded amount of work per call)."""
        c = self.c
        chunk, interval, max_steps = PACE[RebuildPriority(c.cfg.rebuild_priority)]
        steps = 0
        while steps < max_steps and now >= self.next_step and self.has_work():
            self.step(chunk)
            steps += 1
            self.next_step = now + interval
        if steps and self.steps_since_save >= 16:
            c.nvram.save()
            self.steps_since_save = 0

    def step(self, chunk: int) -> None:
        c = self.c
        for arr in c.arrays.values():
            slot = self.rebuilding_slot(arr)
            if slot is not None:
                self.rebuild_step(arr, slot, arr.members[slot], chunk)
                return
        for arr in c.arrays.values():
            if arr.copy_target is not None:
                self.copyback_step(arr, chunk)
                return
        for arr in c.arrays.values():
            if arr.cfg.expand is not None:
                c.expansion.step(arr, chunk)
                return

    def rebuild_step(self, arr: ArrayRt, slot: int, drive: Drive, chunk: int) -> None:
        c = self.c
        pos = drive.rebuilt_to
        lds = c.volumes.extents(arr)
        end = max((ld.cfg.base_offset + ld.volume.per_member_bytes for ld in lds), default=0)
        target: LogicalDrive | None = None
        for ld in lds:
            if ld.cfg.base_offset + ld.volume.per_member_bytes > pos:
                target = ld
                break
        if target is None:
            self.rebuild_done(arr, drive)
            return
        base = target.cfg.base_offset
        if pos < base:
            pos = base  # free space between extents: nothing to rebuild
        stop = base + target.volume.per_member_bytes
        n = min(chunk, stop - pos)
        if target.cfg.failed or target.level is RaidLevel.RAID0:
            n = stop - pos  # its data is gone anyway
        else:
            others = [d for i, d in enumerate(arr.members) if i != slot and d.state is not MemberState.FAILED]
            try:
                if not any(d.has_data(pos, n) for d in others):
                    drive.discard(pos, n)  # all holes: the rebuilt content is zeros
                else:
                    target.volume.rebuild_region(slot, pos - base, n)
                    if c.volumes.lost_pending:
                        c.volumes.lost_found(f"the rebuild onto drive {drive.serial} in bay {drive.bay}")
            except VolumeFailed:
                c.volumes.refresh()
                n = stop - pos
            except DriveError as exc:
                # the drive being rebuilt failed a write: it is failed
                drive.failed = True
                c.log.emit(EventCode.DRIVE_FAILED, f"drive {drive.serial} failed during rebuild ({exc.why})",
                           bay=drive.bay, array=arr.name)
                c.drive_events.drive_lost(drive)
                return
        drive.rebuilt_to = pos + n
        c.intents.set_mark(drive.serial, drive.rebuilt_to)
        self.steps_since_save += 1
        pct = min(99, drive.rebuilt_to * 100 // max(1, end)) // 10 * 10
        if pct > arr.rebuild_pct and drive.rebuilt_to < end:
            if arr.rebuild_pct >= 0 and pct > 0:
                c.log.emit(EventCode.REBUILD_PROGRESS,
                           f"array {arr.name}: rebuild of drive {drive.serial} {pct}% done",
                           bay=drive.bay, array=arr.name)
            arr.rebuild_pct = pct
        if drive.rebuilt_to >= end:
            self.rebuild_done(arr, drive)

    def rebuild_done(self, arr: ArrayRt, drive: Drive) -> None:
        c = self.c
        c.intents.drop_mark(drive.serial)
        drive.member_state = MemberState.OK
        drive.rebuilt_to = 0
        arr.rebuild_pct = -1
        c.log.emit(EventCode.REBUILD_DONE, f"array {arr.name}: rebuild of drive {drive.serial} in bay "
                   f"{drive.bay} complete", bay=drive.bay, array=arr.name)
        c.volumes.refresh()
        c.drive_events.activate_spares()  # commits
        self.start_copybacks()

    def rebuild_progress(self, arr: ArrayRt) -> int | None:
        c = self.c
        slot = self.rebuilding_slot(arr)
        if slot is None:
            return None
        return min(99, arr.members[slot].rebuilt_to * 100 // max(1, c.volumes.array_end(arr.name)))

    # ------------------------------------------------------------------ copy-back
    def start_copybacks(self) -> None:
        """A usable drive in the home bay of a slot a spare holds: fill it from the spare (one
        copy-back per array at a time, after any rebuild of that spare)."""
        c = self.c
        taken = {d.serial for a in c.arrays.values() for d in a.members}
        taken |= {a.copy_target.serial for a in c.arrays.values() if a.copy_target is not None}
        taken |= {s for a in c.arrays.values() for s in a.cfg.spares}
        for arr in c.arrays.values():
            if arr.copy_target is not None or arr.cfg.expand is not None:
                continue
            for slot, spare in enumerate(arr.members):
                bay = arr.cfg.home_bays[slot]
                if spare.bay == bay or spare.serial not in arr.cfg.spares or spare.state is not MemberState.OK:
                    continue
                d = c.enclosure.bays.get(bay)
                if d is None or d.failed or d.serial in taken or d.data_bytes < arr.cfg.member_bytes:
                    continue
                self.begin_copyback(arr, slot, d, 0)
                c.log.emit(EventCode.COPY_BACK_STARTED,
                           f"array {arr.name}: copying spare {spare.serial} (bay {spare.bay}) back onto drive "
                           f"{d.serial} in bay {bay}; the spare stays in the array until it is done",
                           bay=bay, array=arr.name)
                c.nvram.commit()
                break

    def begin_copyback(self, arr: ArrayRt, slot: int, drive: Drive, watermark: int) -> None:
        c = self.c
        arr.copy_target = drive
        arr.cfg.copyback, arr.cfg.copyback_slot = drive.serial, slot
        drive.member_state = MemberState.REBUILDING
        drive.rebuilt_to = watermark
        c.intents.set_mark(drive.serial, watermark)
        drive.copy_broken = False
        arr.members[slot].copy_to = drive  # from now on every write to the spare reaches the new drive too
        arr.rebuild_pct = -1
        self.wake()

    def end_copyback(self, arr: ArrayRt, why: str | None, keep_target: bool = False) -> None:
        c = self.c
        target = arr.copy_target
        assert target is not None
        spare = arr.members[arr.cfg.copyback_slot]
        spare.copy_to = None
        arr.copy_target = None
        arr.cfg.copyback, arr.cfg.copyback_slot = "", -1
        arr.rebuild_pct = -1
        c.intents.drop_mark(target.serial)
        if not keep_target:
            target.member_state = MemberState.OK
            target.rebuilt_to = 0
        if why is not None:
            c.log.emit(EventCode.COPY_BACK_ABORTED, f"array {arr.name}: copy-back onto drive {target.serial} "
                       f"stopped: {why}", bay=target.bay, array=arr.name)

    def copyback_step(self, arr: ArrayRt, chunk: int) -> None:
        """Copy the next chunk of the spare onto the replacement; at the end, swap them."""
        c = self.c
        target = arr.copy_target
        assert target is not None
        slot = arr.cfg.copyback_slot
        spare = arr.members[slot]
        if target.copy_broken:
            target.failed = True
            c.log.emit(EventCode.DRIVE_FAILED, f"drive {target.serial} in bay {target.bay} failed a write "
                       "during copy-back", bay=target.bay, array=arr.name)
            self.end_copyback(arr, f"drive {target.serial} failed")
            c.nvram.commit()
            return
        pos = target.rebuilt_to
        end = c.volumes.array_end(arr.name)
        n = min(chunk, end - pos)
        if n > 0:
            try:
                if spare.has_data(pos, n):
                    target.write(pos, spare.read(pos, n))
                else:
                    target.discard(pos, n)
            except DriveError:
                # the spare cannot give it: let redundancy rebuild the spare's range (the
                # rewrite reaches the new drive through the spare), block by block if need be
                self.copy_through_redundancy(arr, slot, pos, n)
                if target.copy_broken or arr.copy_target is None:
                    return
            target.rebuilt_to = pos + n
            c.intents.set_mark(target.serial, target.rebuilt_to)
            self.steps_since_save += 1
        if target.rebuilt_to >= end:
            self.end_copyback(arr, None, keep_target=True)
            target.member_state = MemberState.OK
            target.rebuilt_to = 0
            arr.members[slot] = target
            arr.cfg.members[slot] = target.serial
            spare.member_state = MemberState.OK
            spare.rebuilt_to = 0
            c.volumes.remake(arr)
            c.log.emit(EventCode.COPY_BACK_DONE, f"array {arr.name}: drive {target.serial} in bay {target.bay} "
                       f"holds its data again", bay=target.bay, array=arr.name)
            c.log.emit(EventCode.SPARE_RELEASED, f"spare {spare.serial} in bay {spare.bay} returns to standby",
                       bay=spare.bay, array=arr.name)
            c.volumes.refresh()
            c.drive_events.activate_spares()  # commits; the freed spare may stand in for another failed drive
            self.start_copybacks()

    def copy_through_redundancy(self, arr: ArrayRt, slot: int, pos: int, n: int) -> None:
        c = self.c
        spare = arr.members[slot]
        for ld in c.volumes.extents(arr):
            base, size = ld.cfg.base_offset, ld.volume.per_member_bytes
            a, b = max(pos, base), min(pos + n, base + size)
            if a >= b or ld.cfg.failed:
                continue
            try:
                ld.volume.rebuild_region(slot, a - base, b - a)
            except VolumeFailed:
                # no redundancy left (the spare is the only copy): copy what reads, the rest is lost
                for o in range(a, b, BLOCK_SIZE):
                    try:
                        spare.write(o, spare.read(o, BLOCK_SIZE))
                    except DriveError:
                        ld.volume.note_member_lost(slot, o - base, BLOCK_SIZE)  # recorded first
                        spare.write(o, bytes(BLOCK_SIZE))  # remaps; reaches the new drive too
            if c.volumes.lost_pending:
                c.volumes.lost_found(f"the copy-back onto drive {arr.copy_target.serial if arr.copy_target else '?'}")
