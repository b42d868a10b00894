"""Array capacity expansion: restripe each logical drive of an array onto more members.

Each step moves whole stripes of the new layout, journalled in the state directory until the
new watermark is in NVRAM (the battery-backed cache's job on the real controller), so a step
interrupted by a stop is replayed at the next start.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, cast

from ..events import EventCode, Severity
from ..raid.api import DriveError, MemberState, RaidLevel, VolumeFailed
from ..raid.volume import RaidVolume, restripe, restripe_safe
from .records import ArrayRt, LogicalDrive
from .spec import BLOCK_SIZE

if TYPE_CHECKING:
    from .core import Controller

JOURNAL_FILE = "expand-journal.bin"


class _Replay:
    """The old layout of an expansion step, answering reads from the step's saved data."""

    def __init__(self, old: RaidVolume, start: int, data: bytes) -> None:
        self._old = old
        self._start = start
        self._data = data
        self.block_size = old.block_size
        self.num_blocks = old.num_blocks
        self.base_offset = old.base_offset
        self.stripe_unit = old.stripe_unit
        self.layout = old.layout
        self.per_member_bytes = old.per_member_bytes
        self.size_bytes = old.size_bytes

    def read(self, lba: int, count: int) -> bytes:
        a = (lba - self._start) * self.block_size
        if a < 0 or a + count * self.block_size > len(self._data):
            return self._old.read(lba, count)
        return self._data[a : a + count * self.block_size]


class Expansion:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def resume(self, arr: ArrayRt) -> None:
        """After a restart: replay the step that was under way when the emulator stopped."""
        c = self.c
        path = c.state_dir / JOURNAL_FILE
        if not path.exists():
            return
        raw = path.read_bytes()
        path.unlink()
        if len(raw) < 24:
            return
        name_b, lun, start, end = struct.unpack_from(">4sIQQ", raw)
        if name_b.rstrip(b"\0").decode() != arr.name or arr.cfg.expand is None:
            return
        el = next((x for x in arr.cfg.expand.lds if x.lun == lun and not x.done), None)
        if el is None or el.watermark != start * BLOCK_SIZE:
            return
        data = raw[28:]
        if len(data) != (end - start) * BLOCK_SIZE:
            return
        ld = c.lds[lun]
        c.volumes.make(ld)
        new = c.volumes.raid(arr, RaidLevel(el.new_raid), arr.members, ld, el.new_base)
        try:
            moved = restripe(cast(RaidVolume, _Replay(ld.volume, start, data)), new, start, end - start)
        except (VolumeFailed, DriveError):
            return  # the new layout lost a drive meanwhile: the step did not happen; the next one says so
        el.watermark = moved * BLOCK_SIZE
        c.volumes.make(ld)

    def step(self, arr: ArrayRt, chunk: int) -> None:
        c = self.c
        exp = arr.cfg.expand
        assert exp is not None
        el = next((x for x in exp.lds if not x.done), None)
        if el is None:
            self.done(arr)
            return
        ld = c.lds[el.lun]
        if ld.cfg.failed:
            c.log.emit(EventCode.UNIT_STATUS,
                       f"logical drive {ld.cfg.lun} failed during expansion; its data is not moved",
                       lun=ld.cfg.lun, array=arr.name, severity=Severity.CRITICAL)
            el.done = True
            ld.cfg.base_offset = el.new_base
            ld.cfg.raid = el.new_raid
            c.volumes.make(ld)
            c.nvram.save()
            return
        old = ld.volume
        new = ld.new_volume or c.volumes.raid(arr, RaidLevel(el.new_raid), arr.members, ld, el.new_base)
        start = el.watermark // BLOCK_SIZE
        total = ld.cfg.num_blocks
        want = max(chunk // BLOCK_SIZE, 1)
        while True:
            try:
                data_end = self.restripe(arr, ld, old, new, start, want)
                break
            except ValueError:
                if start + want >= total:
                    raise
                want *= 2
            except VolumeFailed:  # the new layout lost more members than it survives
                self.lost_drives(arr, ld)
                return
        el.watermark = data_end * BLOCK_SIZE
        ld.new_volume = new
        ld.moved_blocks = data_end
        pct = min(99, int(self.fraction(arr) * 100)) // 10 * 10
        if pct > arr.expand_pct and data_end < total:
            if arr.expand_pct >= 0 and pct > 0:
                c.log.emit(EventCode.EXPAND_PROGRESS, f"array {arr.name}: expansion {pct}% done",
                           array=arr.name)
            arr.expand_pct = pct
        if data_end >= total:
            el.done = True
            ld.cfg.base_offset = el.new_base
            ld.cfg.raid = el.new_raid
            c.volumes.make(ld)
            if all(x.done for x in exp.lds):
                self.done(arr)
                return
        c.nvram.save()

    def restripe(self, arr: ArrayRt, ld: LogicalDrive, old: RaidVolume, new: RaidVolume,
                 start: int, want: int) -> int:
        """One expansion step, journalled: the moved data is kept in the state directory until
        the new watermark is in NVRAM (the battery-backed cache's job on the real controller)."""
        c = self.c
        per = new.layout.stripe_data_bytes // BLOCK_SIZE
        end = min(ld.cfg.num_blocks, start + max(1, want // per) * per)
        if not restripe_safe(old, new, start, end):
            raise ValueError("step too small to stay clear of unmoved data")
        data = old.read_salvaged(start, end - start)
        if c.volumes.lost_pending:
            c.volumes.lost_found(f"the expansion of array {arr.name}")
        journal = c.state_dir / JOURNAL_FILE
        journal.write_bytes(struct.pack(">4sIQQ", arr.name.encode()[:4].ljust(4, b"\0"), ld.cfg.lun, start, end)
                            + bytes(4) + data)
        try:
            done = restripe(cast(RaidVolume, _Replay(old, start, data)), new, start, end - start)
        except Exception:
            # the step failed (the new layout lost a drive): the watermark stays, reads keep using
            # the old layout, and a journal left behind would be replayed into a later expansion
            journal.unlink()
            raise
        journal.unlink()  # kept if the process died in the step: the next start replays it
        return done

    def lost_drives(self, arr: ArrayRt, ld: LogicalDrive) -> None:
        """An expansion whose new layout cannot go on (e.g. RAID 0 losing an added drive): with
        nothing moved yet it is called off and the array keeps its old members; otherwise the
        logical drive being moved, split between two layouts, has failed."""
        c = self.c
        exp = arr.cfg.expand
        assert exp is not None
        if any(x.done or x.watermark for x in exp.lds):
            ld.cfg.failed = True
            c.volumes.refresh()
            c.nvram.commit()
            return
        extra = arr.members[exp.old_count :]
        del arr.members[exp.old_count :]
        del arr.cfg.members[exp.old_count :]
        del arr.cfg.home_bays[exp.old_count :]
        arr.cfg.expand = None
        arr.expand_pct = -1
        for d in extra:
            d.member_state = MemberState.OK
            d.rebuilt_to = 0
        for x in c.volumes.extents(arr):
            c.volumes.make(x)
        c.log.emit(EventCode.EXPAND_ABORTED,
                   f"array {arr.name}: expansion called off before any data moved (an added drive is gone); "
                   f"the array keeps bays {', '.join(map(str, c.volumes.member_bays(arr)))}",
                   array=arr.name, severity=Severity.WARNING)
        c.volumes.refresh()
        c.nvram.commit()
        c.drive_events.activate_spares()

    def fraction(self, arr: ArrayRt) -> float:
        c = self.c
        exp = arr.cfg.expand
        if exp is None:
            return 1.0
        total = sum(c.lds[x.lun].size_bytes for x in exp.lds) or 1
        done = sum(c.lds[x.lun].size_bytes if x.done else x.watermark for x in exp.lds)
        return done / total

    def done(self, arr: ArrayRt) -> None:
        c = self.c
        arr.cfg.expand = None
        arr.expand_pct = -1
        for ld in c.volumes.extents(arr):
            c.volumes.make(ld)
        c.log.emit(EventCode.EXPAND_DONE,
                   f"array {arr.name} now spans bays {', '.join(map(str, c.volumes.member_bays(arr)))}",
                   array=arr.name)
        c.volumes.refresh()
        c.drive_events.activate_spares()
