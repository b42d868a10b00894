"""Provisioning: logical drives and arrays created, deleted, extended and expanded; spares.

Every operation validates its input and raises ControllerError with one line on bad input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..enclosure import Drive
from ..events import EventCode
from ..metadata import ArrayConfig, ExpandConfig, ExpandLd, LdConfig
from ..operations import BAYS, LUNS, MIN_UNIT_BYTES, NAME_MAX
from ..raid.api import MemberState, RaidLevel
from ..raid.layout import Layout, capacity_bytes, data_members
from ..raid.layout import validate as validate_layout
from .errors import CAPACITY_DATA_HAS_CHANGED, ControllerError
from .records import ArrayRt, LogicalDrive, RebuildPriority, UnitState
from .spec import BLOCK_SIZE, KIB, MAX_LUNS, level_for, parse_raid, raid_label, stripe_unit

if TYPE_CHECKING:
    from .core import Controller
    from .views import UnitView


class Provisioning:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def ld(self, lun: int) -> LogicalDrive:
        c = self.c
        if not isinstance(lun, int) or lun not in c.lds:
            raise ControllerError(f"no logical drive with LUN {lun}")
        return c.lds[lun]

    def bays_drives(self, bays: list[int], what: str) -> list[Drive]:
        c = self.c
        if not bays:
            raise ControllerError(f"{what}: no bays given")
        if len(set(bays)) != len(bays):
            raise ControllerError(f"{what}: a bay is named twice")
        out = []
        for bay in bays:
            if not isinstance(bay, int) or bay not in BAYS:
                raise ControllerError(f"{what}: bay {bay} outside {BAYS}")
            d = c.enclosure.bays[bay]
            if d is None:
                raise ControllerError(f"{what}: bay {bay} is empty")
            if d.failed:
                raise ControllerError(f"{what}: the drive in bay {bay} has failed")
            out.append(d)
        return out

    def unassigned(self, drives: list[Drive], what: str, spares_ok: bool = False) -> None:
        c = self.c
        for d in drives:
            role, array = c.views.role(d)
            if role == "member" or (role == "spare" and not spares_ok):
                raise ControllerError(f"{what}: the drive in bay {d.bay} is already a {role} of array {array}")

    def next_array_name(self) -> str:
        c = self.c
        for i in range(26):
            name = chr(ord("A") + i)
            if name not in c.arrays:
                return name
        raise ControllerError("no array name left (A-Z all in use)")

    def free_extent(self, arr: ArrayRt) -> list[tuple[int, int]]:
        """Free (start, length) runs of each member's data area, in order."""
        c = self.c
        runs = []
        pos = 0
        for ld in c.volumes.extents(arr):
            if ld.cfg.base_offset > pos:
                runs.append((pos, ld.cfg.base_offset - pos))
            pos = max(pos, ld.cfg.base_offset + ld.volume.per_member_bytes)
        if arr.cfg.member_bytes > pos:
            runs.append((pos, arr.cfg.member_bytes - pos))
        return runs

    def zero(self, arr: ArrayRt, start: int, length: int) -> None:
        """Zero a member range on every working member: data and parity consistent (all zero)."""
        for d in arr.members:
            if d.present and not d.failed and length > 0:
                d.discard(start, length)

    def add_unit(self, lun: int, bays: list[int] | None = None, raid: str | int = "5",
                 stripe_kib: int | None = None, size_bytes: int | None = None,
                 name: str | None = None, array: str | None = None) -> UnitView:
        """Create logical drive `lun`: on a new array of unassigned `bays`, or on the free space
        of an existing array (`array` given, or `bays` equal to its members)."""
        c = self.c
        if not isinstance(lun, int) or lun not in LUNS:
            raise ControllerError(f"LUN {lun} outside {LUNS}")
        if lun in c.lds:
            raise ControllerError(f"LUN {lun} is already in use")
        if len(c.lds) >= MAX_LUNS:
            raise ControllerError(f"the controller already has {MAX_LUNS} logical drives")
        level = parse_raid(raid)
        if name is not None and (len(name) > NAME_MAX or not name.isprintable()):
            raise ControllerError(f"name: at most {NAME_MAX} printable characters")
        arr: ArrayRt | None = None
        if array is not None:
            arr = c.arrays.get(str(array).upper())
            if arr is None:
                raise ControllerError(f"no array {array}")
            if bays and sorted(bays) != sorted(b for b in c.volumes.member_bays(arr) if b is not None):
                raise ControllerError(f"bays {bays} are not the members of array {arr.name}")
        elif bays:
            for a in c.arrays.values():
                if sorted(bays) == sorted(b for b in c.volumes.member_bays(a) if b is not None):
                    arr = a
                    break
        new_drives: list[Drive] = []
        if arr is None:
            new_drives = self.bays_drives(list(bays or []), "add unit")
            self.unassigned(new_drives, "add unit")
            n = len(new_drives)
        else:
            if arr.cfg.expand is not None:
                raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
            n = len(arr.members)
        level = level_for(level, n)
        su = stripe_unit(stripe_kib, level, n)
        if arr is None:
            member_bytes = min(d.data_bytes for d in new_drives)
            runs = [(0, member_bytes)]
        else:
            member_bytes = arr.cfg.member_bytes
            runs = self.free_extent(arr)
        layout = Layout(level, n, su)
        if size_bytes is None:
            if not runs:
                raise ControllerError(f"array {arr.name if arr else '?'} has no free space")
            start, room = max(runs, key=lambda r: r[1])
            size = capacity_bytes(level, n, room, su) // BLOCK_SIZE * BLOCK_SIZE
            if size < MIN_UNIT_BYTES:
                raise ControllerError("not enough free space for a logical drive")
        else:
            if not isinstance(size_bytes, int) or size_bytes < MIN_UNIT_BYTES or size_bytes % BLOCK_SIZE:
                raise ControllerError(f"size {size_bytes}: a whole number of 512-byte blocks, at least 4 KiB")
            size = size_bytes
            need = layout.per_member_bytes(size)
            fit = [r for r in runs if r[1] >= need]
            if not fit:
                most = max((capacity_bytes(level, n, r[1], su) for r in runs), default=0)
                raise ControllerError(f"{size} bytes do not fit: at most {most} bytes free at RAID "
                                      f"{raid_label(level)}")
            start = fit[0][0]
        if arr is None:
            aname = self.next_array_name()
            acfg = ArrayConfig(aname, [d.serial for d in new_drives], [d.bay or 0 for d in new_drives],
                               member_bytes)
            c.cfg.arrays.append(acfg)
            arr = ArrayRt(acfg, new_drives)
            c.arrays[aname] = arr
            for d in new_drives:
                d.member_state = MemberState.OK
                d.rebuilt_to = 0
        ldc = LdConfig(lun, name or f"Logical Drive {lun}", arr.name, level.value, su // KIB, start,
                       size // BLOCK_SIZE)
        ld = LogicalDrive(ldc)
        c.cfg.lds.append(ldc)
        c.lds[lun] = ld
        c.volumes.make(ld)
        self.zero(arr, start, ld.volume.per_member_bytes)
        c.cache.drop_lun(lun)  # nothing of an earlier logical drive with this LUN
        c.volumes.attach_unit(ld)
        c.log.emit(EventCode.UNIT_CREATED,
                   f"logical drive {lun} ({ldc.name}): RAID {raid_label(level)}, {size} bytes, stripe "
                   f"{ldc.stripe_kib} KiB on array {arr.name}", lun=lun, array=arr.name)
        c.volumes.refresh(quiet=True)
        c.nvram.commit()
        return next(u for u in c.views.units() if u["lun"] == lun)

    def delete_unit(self, lun: int) -> None:
        c = self.c
        ld = self.ld(lun)
        arr = c.arrays[ld.cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
        c.target.remove_lun(lun)
        c.cache.detach(lun)
        del c.lds[lun]
        c.cfg.lds = [x for x in c.cfg.lds if x.lun != lun]
        c.log.emit(EventCode.UNIT_DELETED, f"logical drive {lun} ({ld.cfg.name}) deleted",
                   lun=lun, array=arr.name)
        if not any(x.cfg.array == arr.name for x in c.lds.values()):
            for d in arr.members:
                d.member_state = MemberState.OK
                d.rebuilt_to = 0
            del c.arrays[arr.name]
            c.cfg.arrays = [a for a in c.cfg.arrays if a.name != arr.name]
            c.log.emit(EventCode.CONFIG_CHANGED, f"array {arr.name} deleted with its last logical drive",
                       array=arr.name)
        c.nvram.commit()

    def add_spare(self, lun: int, bays: list[int]) -> None:
        """Assign the drives in `bays` as online spares of the array that holds `lun`."""
        c = self.c
        arr = c.arrays[self.ld(lun).cfg.array]
        drives = self.bays_drives(bays, "add spare")
        self.unassigned(drives, "add spare", spares_ok=True)
        for d in drives:
            if d.data_bytes < arr.cfg.member_bytes:
                raise ControllerError(f"the drive in bay {d.bay} is smaller than the members of array {arr.name}")
            if d.serial in arr.cfg.spares:
                raise ControllerError(f"the drive in bay {d.bay} is already a spare of array {arr.name}")
        for d in drives:
            arr.cfg.spares.append(d.serial)
            c.log.emit(EventCode.SPARE_ADDED, f"drive {d.serial} in bay {d.bay} is a spare of array {arr.name}",
                       bay=d.bay, array=arr.name)
        c.drive_events.activate_spares()

    def delete_spare(self, lun: int, bays: list[int]) -> None:
        c = self.c
        arr = c.arrays[self.ld(lun).cfg.array]
        if not bays:
            raise ControllerError("delete spare: no bays given")
        serials = []
        for bay in bays:
            d = c.enclosure.bays.get(bay) if isinstance(bay, int) else None
            if d is None or d.serial not in arr.cfg.spares:
                raise ControllerError(f"bay {bay} holds no spare of array {arr.name}")
            serials.append(d.serial)
        for s in serials:
            arr.cfg.spares.remove(s)
            c.log.emit(EventCode.SPARE_REMOVED, f"drive {s} is no longer a spare of array {arr.name}",
                       bay=c.views.spare_bay(s), array=arr.name)
        c.nvram.commit()

    def expand_unit(self, lun: int, bays: list[int]) -> None:
        """Array capacity expansion: restripe every logical drive of `lun`'s array onto `bays` too."""
        c = self.c
        arr = c.arrays[self.ld(lun).cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is already expanding")
        drives = self.bays_drives(bays, "expand")
        self.unassigned(drives, "expand")
        for d in arr.members:
            if d.state is not MemberState.OK:
                raise ControllerError(f"array {arr.name} is not healthy (drive {d.serial} is "
                                      f"{'rebuilding' if d.state is MemberState.REBUILDING else 'failed'})")
        for d in drives:
            if d.data_bytes < arr.cfg.member_bytes:
                raise ControllerError(f"the drive in bay {d.bay} is smaller than the members of array {arr.name}")
        lds = c.volumes.extents(arr)
        if any(ld.cfg.failed for ld in lds):
            raise ControllerError(f"array {arr.name} holds a failed logical drive")
        old_n = len(arr.members)
        new_n = old_n + len(drives)
        plan: list[ExpandLd] = []
        base = 0
        for ld in lds:
            new_level = ld.level
            if new_level is RaidLevel.RAID1:
                new_level = RaidLevel.RAID10
            try:
                validate_layout(new_level, new_n, ld.stripe_unit)
            except ValueError as exc:
                raise ControllerError(f"logical drive {ld.cfg.lun}: {exc}") from exc
            new_pm = Layout(new_level, new_n, ld.stripe_unit).per_member_bytes(ld.size_bytes)
            if data_members(new_level, new_n) <= data_members(ld.level, old_n):
                raise ControllerError(f"logical drive {ld.cfg.lun}: RAID {raid_label(new_level)} gains no "
                                      "capacity from these drives")
            plan.append(ExpandLd(ld.cfg.lun, ld.level.value, new_level.value, ld.cfg.base_offset, base))
            base += new_pm
        for d in drives:
            d.member_state = MemberState.OK
            d.rebuilt_to = 0
            d.discard(0, arr.cfg.member_bytes)
        arr.members.extend(drives)
        arr.cfg.members.extend(d.serial for d in drives)
        arr.cfg.home_bays.extend(d.bay or 0 for d in drives)
        arr.cfg.expand = ExpandConfig(old_n, plan)
        arr.expand_pct = 0
        for ld in lds:
            c.volumes.make(ld)
        c.log.emit(EventCode.EXPAND_STARTED,
                   f"array {arr.name}: expanding onto bays {', '.join(map(str, bays))}", array=arr.name)
        c.volumes.refresh()
        c.nvram.commit()
        c.background.wake()

    def extend_unit(self, lun: int, size_bytes: int) -> None:
        """Grow logical drive `lun` into the free space that follows it on its array."""
        c = self.c
        ld = self.ld(lun)
        arr = c.arrays[ld.cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
        if ld.state is UnitState.FAILED:
            raise ControllerError(f"logical drive {lun} has failed")
        if not isinstance(size_bytes, int) or size_bytes % BLOCK_SIZE:
            raise ControllerError(f"size {size_bytes}: a whole number of 512-byte blocks")
        if size_bytes <= ld.size_bytes:
            raise ControllerError(f"size {size_bytes} is not larger than the current {ld.size_bytes} bytes")
        n = len(arr.members)
        base = ld.cfg.base_offset
        old_pm = ld.volume.per_member_bytes
        new_pm = Layout(ld.level, n, ld.stripe_unit).per_member_bytes(size_bytes)
        limit = arr.cfg.member_bytes
        for other in c.volumes.extents(arr):
            if other.cfg.base_offset > base:
                limit = min(limit, other.cfg.base_offset)
        if base + new_pm > limit:
            most = capacity_bytes(ld.level, n, limit - base, ld.stripe_unit) // BLOCK_SIZE * BLOCK_SIZE
            raise ControllerError(f"logical drive {lun} can grow to at most {most} bytes on array {arr.name}")
        self.zero(arr, base + old_pm, new_pm - old_pm)
        old = ld.size_bytes
        ld.cfg.num_blocks = size_bytes // BLOCK_SIZE
        c.volumes.make(ld)
        # the unused tail of the old last stripe holds whatever was there (an expansion's old
        # layout, a deleted unit): the new blocks there must read as zeros, parity included
        old_blocks = old // BLOCK_SIZE
        tail_end = min(ld.cfg.num_blocks, -(-old // ld.volume.layout.stripe_data_bytes)
                       * ld.volume.layout.stripe_data_bytes // BLOCK_SIZE)
        if tail_end > old_blocks:
            ld.volume.write(old_blocks, bytes((tail_end - old_blocks) * BLOCK_SIZE))
        c.target.establish_unit_attention(lun, CAPACITY_DATA_HAS_CHANGED)
        c.log.emit(EventCode.UNIT_EXTENDED, f"logical drive {lun} grew from {old} to {size_bytes} bytes",
                   lun=lun, array=arr.name)
        c.nvram.commit()

    def set_rebuild_priority(self, priority: str) -> None:
        c = self.c
        try:
            p = RebuildPriority(str(priority).lower())
        except ValueError:
            raise ControllerError(f"rebuild priority {priority!r}: high, medium or low") from None
        if p.value != c.cfg.rebuild_priority:
            c.cfg.rebuild_priority = p.value
            c.log.emit(EventCode.REBUILD_PRIORITY, f"rebuild priority set to {p.value}")
            c.nvram.commit()
