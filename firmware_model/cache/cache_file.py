"""The cache's slots in its mapped file: the file's life (create, open and replay scan, resize,
close) and the two stores that make a line durable or release it (the slot header).

`CacheFile` is the base of WriteCache; `_seal` and `_release_header` are on the write path
(called directly, no layer in between). The format itself is in .layout.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from ..clock import Clock
from . import layout
from .index import LineIndex, _Line
from .layout import (
    _CRC,
    _HDR,
    _ZERO8,
    HDR_BYTES,
    LINE_BLOCKS,
    LINE_BYTES,
    LINE_MASK,
    LUN_SHIFT,
    SUPER_BYTES,
    CacheError,
    _crc,
)


class CacheFile(LineIndex):
    """The line index of a cache of `size_bytes`, its slots in the file at `path` (opened here:
    what a previous run left unwritten comes back as dirty lines, listed in `loaded`)."""

    def __init__(self, path: Path, size_bytes: int, clock: Clock, ratio_read_percent: int) -> None:
        if size_bytes < 64 * LINE_BYTES or size_bytes % LINE_BYTES:
            raise CacheError(f"cache size {size_bytes} too small or not a multiple of {LINE_BYTES}")
        super().__init__(clock, ratio_read_percent)
        self.path = Path(path)
        self.want_slots = size_bytes // LINE_BYTES
        self._seq = 0
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._mv: memoryview | None = None
        self._hdr_base = SUPER_BYTES
        self._data_base = 0
        self.loaded: list[tuple[int, int, int, int]] = []  # (lun, lba, mask, slot) found on open
        self.torn = 0
        self.superseded = 0
        self._open()
        self._limits()

    _geometry = staticmethod(layout.geometry)

    def _map(self, slots: int) -> None:
        self.slots = slots
        self._data_base, total = layout.geometry(slots)
        if os.fstat(self._fd).st_size != total:
            os.ftruncate(self._fd, total)
        flags = mmap.MAP_SHARED
        self._mm = mmap.mmap(self._fd, total, flags=flags)
        self._mv = memoryview(self._mm)

    def _create(self, slots: int) -> None:
        layout.create(self.path, slots)
        self._fd = os.open(self.path, os.O_RDWR)
        self._map(slots)
        self._free = list(range(slots - 1, -1, -1))

    def _open(self) -> None:
        slots = layout.read_super(self.path)
        if slots is None:
            self._create(self.want_slots)
            return
        self._fd = os.open(self.path, os.O_RDWR)
        try:  # a file an older version made sparse, or one copied without its blocks
            layout.reserve(self.path, self._fd, layout.geometry(slots)[1])
        except CacheError:
            os.close(self._fd)
            self._fd = -1
            raise
        self._map(slots)
        self._scan()

    def _scan(self) -> None:
        """Read every header: valid slots become dirty lines, the rest are free."""
        assert self._mm is not None and self._mv is not None
        found = layout.scan(self._mm, self._mv, self.slots, self._hdr_base, self._data_base)
        self.torn += found.torn
        self.superseded += found.superseded
        self._seq = found.seq
        for key, slot, mask in found.lines:
            self._add_line(key, _Line(slot, mask, mask))
            self._set_dirty(key)
            self.loaded.append((key >> LUN_SHIFT, (key & LINE_MASK) * LINE_BLOCKS, mask, slot))
        self._free = found.free

    def resize(self, size_bytes: int) -> None:
        """New geometry; only when nothing is unwritten. Clean lines are dropped."""
        if self._dirty:
            raise CacheError(f"the cache holds {self.dirty_bytes} bytes not yet written to the drives")
        if size_bytes < 64 * LINE_BYTES or size_bytes % LINE_BYTES:
            raise CacheError(f"cache size {size_bytes} too small or not a multiple of {LINE_BYTES}")
        self.want_slots = size_bytes // LINE_BYTES
        if self.want_slots == self.slots:
            return
        self._unmap()
        self._forget()
        try:
            self._create(self.want_slots)
        except CacheError:  # no room for the new size: the old file (still in place) serves on
            self.want_slots = self.slots
            self._open()
            self._limits()
            raise
        self._limits()

    def _unmap(self) -> None:
        if self._mv is not None:
            self._mv.release()
            self._mv = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Close the mapping (what it holds stays in the file for the next start)."""
        self._unmap()

    def sync(self) -> None:
        """msync: the mapping on stable storage (beyond kill -9: a host crash)."""
        if self._mm is not None:
            self._mm.flush()

    # ============================================================ the headers
    def _release_header(self, slot: int) -> None:
        h = self._hdr_base + slot * HDR_BYTES
        assert self._mm is not None
        self._mm[h : h + 8] = _ZERO8

    def _seal(self, key: int, line: _Line) -> None:
        """Write the header of `line`'s slot (after its data): from now on it survives a crash."""
        mm, mv = self._mm, self._mv
        assert mm is not None and mv is not None
        self._seq += 1
        slot = line.slot
        hdr = _HDR.pack(self._seq, (key & LINE_MASK) * LINE_BLOCKS, key >> LUN_SHIFT, line.dirty)
        d = self._data_base + slot * LINE_BYTES
        h = self._hdr_base + slot * HDR_BYTES
        mm[h : h + 28] = hdr + _CRC.pack(_crc(mv[d : d + LINE_BYTES], _crc(hdr)))

