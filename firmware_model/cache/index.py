"""The cache's line index: the lines held, the dirty ones (oldest first), the LRU of clean ones,
the free slots, and how many of each the read and write shares allow.

`LineIndex` is the base of WriteCache, which adds the mapped file and the I/O; the methods
here are on the I/O path (called directly, no layer in between).
"""

from __future__ import annotations

from collections import OrderedDict

from ..clock import Clock
from .layout import BLOCK, LINE_MASK, LUN_SHIFT
from .settings import DESTAGE_DELAY


class _Line:
    __slots__ = ("dirty", "slot", "valid")

    def __init__(self, slot: int, valid: int, dirty: int) -> None:
        self.slot = slot
        self.valid = valid  # blocks whose data the slot holds
        self.dirty = dirty  # blocks not yet on the drives (a subset of valid)


class LineIndex:
    """Lines of 8 blocks keyed by (LUN, line number), each in one slot of `slots`."""

    def __init__(self, clock: Clock, ratio_read_percent: int) -> None:
        self.clock = clock
        self.ratio_read_percent = ratio_read_percent
        self.read_cache = True
        self.lines: dict[int, _Line] = {}
        self._dirty: dict[int, None] = {}  # dirty line keys, oldest first
        self._dirty_per_lun: dict[int, int] = {}
        self._lines_per_lun: dict[int, int] = {}
        self._clean: OrderedDict[int, None] = OrderedDict()  # LRU: first = least recent
        self._free: list[int] = []
        self._due: float | None = None  # when the background destage should run next
        self.slots = 0

    # ============================================================= the shares
    def _limits(self) -> None:
        reserve = min(16, self.slots // 8)
        write_share = 100 - self.ratio_read_percent
        self.max_dirty = max(0, self.slots * write_share // 100 - (reserve if write_share else 0))
        if write_share and self.max_dirty < 1:
            self.max_dirty = 1
        self.max_clean = self.slots * self.ratio_read_percent // 100 if self.read_cache else 0
        self.high_water = max(1, self.max_dirty * 3 // 4)
        while len(self._clean) > self.max_clean:
            self._evict()

    def set_read_cache(self, on: bool) -> None:
        self.read_cache = on
        self._limits()

    @property
    def can_write_back(self) -> bool:
        return self.max_dirty > 0

    # ============================================================= bookkeeping
    def _add_line(self, key: int, line: _Line) -> None:
        self.lines[key] = line
        lun = key >> LUN_SHIFT
        self._lines_per_lun[lun] = self._lines_per_lun.get(lun, 0) + 1

    def _remove_line(self, key: int) -> _Line:
        line = self.lines.pop(key)
        lun = key >> LUN_SHIFT
        n = self._lines_per_lun[lun] - 1
        if n:
            self._lines_per_lun[lun] = n
        else:
            del self._lines_per_lun[lun]
        return line

    def _set_dirty(self, key: int) -> None:
        if key not in self._dirty:
            if not self._dirty and self._due is None:
                self._due = self.clock.now() + DESTAGE_DELAY
            self._dirty[key] = None
            lun = key >> LUN_SHIFT
            self._dirty_per_lun[lun] = self._dirty_per_lun.get(lun, 0) + 1

    def _clear_dirty(self, key: int) -> None:
        del self._dirty[key]
        lun = key >> LUN_SHIFT
        n = self._dirty_per_lun[lun] - 1
        if n:
            self._dirty_per_lun[lun] = n
        else:
            del self._dirty_per_lun[lun]

    def _evict(self) -> int:
        key, _ = self._clean.popitem(last=False)
        line = self._remove_line(key)
        return line.slot

    def _forget(self) -> None:
        self.lines.clear()
        self._dirty.clear()
        self._dirty_per_lun.clear()
        self._lines_per_lun.clear()
        self._clean.clear()
        self._due = None

    def drop_clean(self) -> None:
        while self._clean:
            self._free.append(self._evict())

    # ================================================================= views
    @property
    def dirty_lines(self) -> int:
        return len(self._dirty)

    @property
    def dirty_bytes(self) -> int:
        lines = self.lines
        return sum(lines[k].dirty.bit_count() for k in self._dirty) * BLOCK

    def dirty_luns(self) -> dict[int, int]:
        return dict(self._dirty_per_lun)

    def first_dirty_lba(self, lun: int) -> int | None:
        """The first LBA of the lowest line of `lun` holding unwritten data (None: it holds none).

        The line's first LBA, not that of its first dirty block (drop_all reports the block)."""
        if not self._dirty_per_lun.get(lun):
            return None
        return min((k & LINE_MASK) * 8 for k in self._dirty if k >> LUN_SHIFT == lun)
