"""The array accelerator: a write-back cache shared by every logical drive, in a mapped file.

The MSA500's 128 MB battery-backed cache is emulated by `cache.nvram` in the state directory,
mapped into memory: what is stored in the mapping is in the kernel's page cache the moment
the store retires, so `kill -9` of the emulator loses none of it. A WRITE is acknowledged
only after its data and a checksummed header are in the mapping.

File layout (little endian):
  [0, 4096)          superblock: magic b"MSA5ACC1", version, line bytes, slot count, CRC32C
  [4096, data_base)  slot headers, 32 bytes each:
                       0  u64 seq    (0: the slot holds no unwritten data)
                       8  u64 lba    first LBA of the line (a multiple of 8)
                       16 u16 lun
                       18 u8  dirty  bitmap of the line's blocks not yet on the drives
                       24 u32 crc    CRC32C over header bytes 0-23 then the 4 KiB of data
  [data_base, ...)   slot data, 4 KiB (8 blocks) each; data_base is 4 KiB aligned

Crash safety: the only valid copy of an acknowledged block is never overwritten in place.
A write to a line with unwritten data goes to a free slot (old data copied, new blocks on
top, header with a higher seq written last), and only then is the old slot's header cleared.
A clean line (its data is on the drives; no header) may be updated in place. On start
every slot with a good CRC is read; per line the highest seq wins; a torn slot (bad CRC)
was never acknowledged and is ignored; the survivors are written to the drives.

Clean lines stay as a read cache (LRU) in the read share of the memory; the write share
bounds the unwritten data. Destaging coalesces dirty lines in (LUN, LBA) order into
contiguous runs: one volume write per run, so runs covering whole stripes are full-stripe
writes for the RAID layer.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import crc32c

from .clock import Clock
from .scsi.errors import ScsiError
from .scsi.types import BlockVolume

CACHE_FILE = "cache.nvram"
BLOCK = 512
LINE_BLOCKS = 8
LINE_BYTES = BLOCK * LINE_BLOCKS
FULL = (1 << LINE_BLOCKS) - 1
HDR_BYTES = 32
SUPER_BYTES = 4096
MAGIC = b"MSA5ACC1"
VERSION = 1
MIB = 1 << 20
STEP_BYTES = 4 * MIB  # background destage: at most this much per step
DESTAGE_DELAY = 0.05  # seconds dirty data may wait before the background destage starts
POPULATE_MAX_BLOCKS = 512  # reads up to 256 KiB fill the read cache; longer ones stream past
RATIOS = (0, 25, 50, 75, 100)
LUN_SHIFT = 48
LINE_MASK = (1 << LUN_SHIFT) - 1

_SUPER = struct.Struct("<8sIII")
_HDR = struct.Struct("<QQHB5x")  # 24 bytes, then u32 crc, then 4 bytes zero
_CRC = struct.Struct("<I")
_ZERO8 = bytes(8)
_crc = crc32c.crc32c


def _runs(mask: int) -> tuple[tuple[int, int], ...]:
    """Contiguous (start, end) block runs set in `mask`."""
    out: list[tuple[int, int]] = []
    b = 0
    while b < LINE_BLOCKS:
        if mask >> b & 1:
            s = b
            while b < LINE_BLOCKS and mask >> b & 1:
                b += 1
            out.append((s, b))
        else:
            b += 1
    return tuple(out)


RUNS: tuple[tuple[tuple[int, int], ...], ...] = tuple(_runs(m) for m in range(FULL + 1))


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CacheError(Exception):
    """A cache file that cannot be used, or a setting refused."""


Volume = BlockVolume  # what the cache writes to and reads from (the controller's LdVolume)


@dataclass
class CacheSettings:
    """What the operator sets (ACU / SET CACHE) and the shelf's build (the TOML config)."""

    size_mb: int = 128
    ratio_read_percent: int = 50
    enabled: bool = True
    force_write_back: bool = False  # ACU's "no-battery write cache": write-back without a battery
    holdup_s: float = 4 * 86400.0
    charge_s: float = 600.0
    spinup_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: CacheSettings | None = None) -> CacheSettings:
        out = cls(**asdict(base)) if base is not None else cls()
        names = {f.name for f in fields(cls)}
        for k, v in raw.items():
            if k in names:
                setattr(out, k, v)
        return out


class _Line:
    __slots__ = ("dirty", "slot", "valid")

    def __init__(self, slot: int, valid: int, dirty: int) -> None:
        self.slot = slot
        self.valid = valid  # blocks whose data the slot holds
        self.dirty = dirty  # blocks not yet on the drives (a subset of valid)


@dataclass
class ReplayResult:
    lines: int = 0
    blocks: int = 0
    torn: int = 0
    superseded: int = 0
    per_lun: dict[int, int] | None = None


class WriteCache:
    """The cache of one controller: lines of 8 blocks keyed by (LUN, line number)."""

    def __init__(self, path: Path, size_bytes: int, clock: Clock, *, ratio_read_percent: int = 50) -> None:
        if size_bytes < 64 * LINE_BYTES or size_bytes % LINE_BYTES:
            raise CacheError(f"cache size {size_bytes} too small or not a multiple of {LINE_BYTES}")
        self.path = Path(path)
        self.clock = clock
        self.want_slots = size_bytes // LINE_BYTES
        self.ratio_read_percent = ratio_read_percent
        self.write_back = False  # the controller decides (battery, settings)
        self.read_cache = True
        self.volumes: dict[int, Volume] = {}
        self.lines: dict[int, _Line] = {}
        self._dirty: dict[int, None] = {}  # dirty line keys, oldest first
        self._dirty_per_lun: dict[int, int] = {}
        self._lines_per_lun: dict[int, int] = {}
        self._clean: OrderedDict[int, None] = OrderedDict()  # LRU: first = least recent
        self._free: list[int] = []
        self._seq = 0
        self._cursor = 0  # elevator position of the background destage
        self._due: float | None = None
        self.errors: dict[int, Exception] = {}  # LUN -> last destage error
        # LUN -> the error of a destage refused for want of space on the drive images (ENOSPC,
        # EDQUOT): not a failure of the data, which stays here and is written when space returns
        # (or replayed at the next start). `on_no_space(lun, error or None)` hears each change.
        self.no_space: dict[int, OSError] = {}
        self.on_no_space: Callable[[int, OSError | None], None] | None = None
        # statistics
        self.read_blocks = 0
        self.read_hit_blocks = 0
        self.write_blocks = 0
        self.write_hit_blocks = 0
        self.destaged_bytes = 0
        self.destage_writes = 0
        self._rate: deque[tuple[float, int]] = deque()
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._mv: memoryview | None = None
        self.slots = 0
        self._hdr_base = SUPER_BYTES
        self._data_base = 0
        self.loaded: list[tuple[int, int, int, int]] = []  # (lun, lba, mask, slot) found on open
        self.torn = 0
        self.superseded = 0
        self._open()
        self._limits()

    # ================================================================ the file
    @staticmethod
    def _geometry(slots: int) -> tuple[int, int]:
        hdr = -(-slots * HDR_BYTES // 4096) * 4096
        data_base = SUPER_BYTES + hdr
        return data_base, data_base + slots * LINE_BYTES

    def _map(self, slots: int) -> None:
        self.slots = slots
        self._data_base, total = self._geometry(slots)
        if os.fstat(self._fd).st_size != total:
            os.ftruncate(self._fd, total)
        flags = mmap.MAP_SHARED
        self._mm = mmap.mmap(self._fd, total, flags=flags)
        self._mv = memoryview(self._mm)

    def _reserve(self, fd: int, total: int) -> None:
        """Allocate every block of the file now (holes become zeros that cost their space).

        A store into a hole of a mapping is a page fault the file system must back; when it
        is full, the kernel answers SIGBUS and the process dies without a word. Reserved at
        creation (and checked at each start), the mapping never needs a new block.
        """
        try:
            os.posix_fallocate(fd, 0, total)
        except OSError as exc:
            try:
                st = os.statvfs(self.path.parent)
                free = f"{st.f_bavail * st.f_frsize / MIB:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            raise CacheError(f"cannot reserve {total / MIB:.1f} MiB for the cache on its file system "
                             f"({free}): {exc.strerror or exc}") from exc

    def _create(self, slots: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _, total = self._geometry(slots)
            os.ftruncate(fd, total)
            self._reserve(fd, total)
            sup = _SUPER.pack(MAGIC, VERSION, LINE_BYTES, slots)
            os.pwrite(fd, sup + _CRC.pack(_crc(sup)), 0)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_RDWR)
        self._map(slots)
        self._free = list(range(slots - 1, -1, -1))

    def _open(self) -> None:
        slots = self._read_super()
        if slots is None:
            self._create(self.want_slots)
            return
        self._fd = os.open(self.path, os.O_RDWR)
        try:  # a file an older version made sparse, or one copied without its blocks
            self._reserve(self._fd, self._geometry(slots)[1])
        except CacheError:
            os.close(self._fd)
            self._fd = -1
            raise
        self._map(slots)
        self._scan()

    def _read_super(self) -> int | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_SUPER.size + 4)
        except FileNotFoundError:
            return None
        if len(raw) < _SUPER.size + 4:
            return None
        magic, version, line, slots = _SUPER.unpack_from(raw)
        (crc,) = _CRC.unpack_from(raw, _SUPER.size)
        if magic != MAGIC or version != VERSION or line != LINE_BYTES or crc != _crc(raw[: _SUPER.size]):
            return None  # written only when the cache is empty: nothing to lose
        if slots <= 0 or os.path.getsize(self.path) < self._geometry(slots)[1]:
            return None
        return int(slots)

    def _scan(self) -> None:
        """Read every header: valid slots become dirty lines, the rest are free."""
        assert self._mm is not None and self._mv is not None
        mm, mv = self._mm, self._mv
        best: dict[int, tuple[int, int, int]] = {}  # key -> (seq, slot, mask)
        free: list[int] = []
        top = 0
        hb, db = self._hdr_base, self._data_base
        for slot in range(self.slots):
            h = hb + slot * HDR_BYTES
            if mm[h : h + 8] == _ZERO8:
                free.append(slot)
                continue
            seq, lba, lun, mask = _HDR.unpack_from(mm, h)
            (crc,) = _CRC.unpack_from(mm, h + 24)
            d = db + slot * LINE_BYTES
            if (crc != _crc(mv[d : d + LINE_BYTES], _crc(mv[h : h + 24])) or mask == 0 or mask > FULL
                    or lba % LINE_BLOCKS):
                self.torn += 1  # never acknowledged
                mm[h : h + HDR_BYTES] = bytes(HDR_BYTES)
                free.append(slot)
                continue
            top = max(top, seq)
            key = lun << LUN_SHIFT | lba // LINE_BLOCKS
            old = best.get(key)
            if old is not None:
                self.superseded += 1
                loser = old if old[0] < seq else (seq, slot, mask)
                winner = (seq, slot, mask) if old[0] < seq else old
                lh = hb + loser[1] * HDR_BYTES
                mm[lh : lh + HDR_BYTES] = bytes(HDR_BYTES)
                free.append(loser[1])
                best[key] = winner
            else:
                best[key] = (seq, slot, mask)
        self._seq = top
        for key, (_seq, slot, mask) in sorted(best.items(), key=lambda kv: kv[1][0]):
            self._add_line(key, _Line(slot, mask, mask))
            self._set_dirty(key)
            self.loaded.append((key >> LUN_SHIFT, (key & LINE_MASK) * LINE_BLOCKS, mask, slot))
        free.sort(reverse=True)
        self._free = free

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

    # ============================================================= bookkeeping
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

    def set_ratio(self, read_percent: int) -> None:
        """Read share 0-100 % in steps of 25; unwritten data above the new write share is destaged now."""
        if read_percent not in RATIOS:
            raise CacheError(f"read/write ratio {read_percent}: the read share is 0, 25, 50, 75 or 100 %")
        self.ratio_read_percent = read_percent
        self._limits()
        if len(self._dirty) > self.max_dirty:
            self._destage_oldest(len(self._dirty) - self.max_dirty)

    def set_read_cache(self, on: bool) -> None:
        self.read_cache = on
        self._limits()

    @property
    def can_write_back(self) -> bool:
        return self.max_dirty > 0

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

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        if self._clean:
            return self._evict()
        # every slot holds unwritten data: write some out now
        self._destage_oldest(max(1, min(len(self._dirty), 256)))
        if self._free:
            return self._free.pop()
        if self._clean:
            return self._evict()
        raise CacheError("no cache slot could be freed (destage failing)")

    def _make_room(self) -> bool:
        """The write share is full: destage the oldest data, enough for a few more writes."""
        want = len(self._dirty) - self.max_dirty + max(8, self.max_dirty // 16)
        self._destage_oldest(want)
        return len(self._dirty) < self.max_dirty

    # ================================================================== I/O
    def attach(self, lun: int, volume: Volume) -> None:
        self.volumes[lun] = volume

    def detach(self, lun: int) -> None:
        self.drop_lun(lun)
        self.volumes.pop(lun, None)

    def read(self, lun: int, lba: int, count: int) -> bytes:
        vol = self.volumes[lun]
        if count <= 0:
            return b""
        self.read_blocks += count
        if lun not in self._lines_per_lun:
            data = vol.read(lba, count)
            if count <= POPULATE_MAX_BLOCKS and self.max_clean:
                self._populate(lun, lba, count, data)
            return data
        lines = self.lines
        base = lun << LUN_SHIFT
        first = lba >> 3
        last = (lba + count - 1) >> 3
        end = lba + count
        full = True
        hits: list[tuple[int, _Line, int, int]] = []  # (line index, line, first block, end block)
        for idx in range(first, last + 1):
            s = lba - idx * 8 if idx == first else 0
            e = end - idx * 8 if idx == last else 8
            need = FULL >> (8 - e + s) << s
            line = lines.get(base | idx)
            if line is None:
                full = False
                continue
            if line.valid & need != need:
                full = False
            hits.append((idx, line, s, e))
        mv = self._mv
        assert mv is not None
        db = self._data_base
        if full:
            parts = []
            for _idx, line, s, e in hits:
                d = db + line.slot * LINE_BYTES
                parts.append(mv[d + s * BLOCK : d + e * BLOCK])
                if not line.dirty:
                    self._clean.move_to_end(base | _idx)
            self.read_hit_blocks += count
            return b"".join(parts)
        try:
            data = vol.read(lba, count)
        except ScsiError:
            if not any(line.dirty for _i, line, _s, _e in hits):
                raise
            data = self._read_around_dirty(vol, lba, count, hits)
        if not hits:
            if count <= POPULATE_MAX_BLOCKS and self.max_clean:
                self._populate(lun, lba, count, data)
            return data
        out: bytearray | None = None
        for idx, line, s, e in hits:
            if not line.dirty:
                self._clean.move_to_end(base | idx)
                continue
            m = line.dirty & (FULL >> (8 - e + s) << s)
            if not m:
                continue
            if out is None:
                out = bytearray(data)
            d = db + line.slot * LINE_BYTES
            for rs, re in RUNS[m]:
                o = (idx * 8 + rs - lba) * BLOCK
                out[o : o + (re - rs) * BLOCK] = mv[d + rs * BLOCK : d + re * BLOCK]
                self.read_hit_blocks += re - rs
        return bytes(out) if out is not None else data

    @staticmethod
    def _read_around_dirty(vol: Volume, lba: int, count: int, hits: list[tuple[int, _Line, int, int]]) -> bytes:
        """The drives' part of a read that failed as a whole: only the blocks the cache does not
        hold dirty (a block rewritten over a lost one must not fail with it); the dirty ones are
        laid on top by the caller."""
        held = bytearray(count)
        for idx, line, s, e in hits:
            for b in range(s, e):
                if line.dirty >> b & 1:
                    held[idx * 8 + b - lba] = 1
        out = bytearray(count * BLOCK)
        b = 0
        while b < count:
            if held[b]:
                b += 1
                continue
            e = b
            while e < count and not held[e]:
                e += 1
            out[b * BLOCK : e * BLOCK] = vol.read(lba + b, e - b)
            b = e
        return bytes(out)

    def _populate(self, lun: int, lba: int, count: int, data: bytes) -> None:
        """Keep whole lines of a read as clean lines (the read cache)."""
        mm = self._mm
        assert mm is not None
        first = -(-lba // 8)
        stop = (lba + count) // 8
        base = lun << LUN_SHIFT
        db = self._data_base
        for idx in range(first, stop):
            key = base | idx
            if key in self.lines:
                continue
            if self._free and len(self._clean) < self.max_clean:
                slot = self._free.pop()
            elif self._clean:
                slot = self._evict()
            else:
                return
            o = (idx * 8 - lba) * BLOCK
            d = db + slot * LINE_BYTES
            mm[d : d + LINE_BYTES] = data[o : o + LINE_BYTES]
            self._add_line(key, _Line(slot, FULL, 0))
            self._clean[key] = None

    def write(self, lun: int, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Write-back: returns when the data and its header are in the mapped file."""
        mv = memoryview(data)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        count = len(mv) // BLOCK
        if count <= 0:
            return
        first = lba >> 3
        last = (lba + count - 1) >> 3
        if not self.write_back or last - first + 1 > self.max_dirty // 2:
            self._write_through(lun, lba, mv)
            return
        self.write_blocks += count
        lines = self.lines
        mm = self._mm
        assert mm is not None
        base = lun << LUN_SHIFT
        db = self._data_base
        end = lba + count
        pos = 0
        for idx in range(first, last + 1):
            s = lba - idx * 8 if idx == first else 0
            e = end - idx * 8 if idx == last else 8
            m = FULL >> (8 - e + s) << s
            n = (e - s) * BLOCK
            chunk = mv[pos : pos + n]
            pos += n
            key = base | idx
            line = lines.get(key)
            if line is not None and line.dirty and not self._free and not self._clean:
                self._destage_oldest(max(8, self.max_dirty // 16))  # may write this very line out
                line = lines.get(key)
            if line is not None and line.dirty:
                # copy on write: the old slot stays valid until the new one is sealed
                self.write_hit_blocks += e - s
                new = self._alloc()
                nd = db + new * LINE_BYTES
                old = line.slot
                if m != FULL:
                    mm.move(nd, db + old * LINE_BYTES, LINE_BYTES)
                mm[nd + s * BLOCK : nd + e * BLOCK] = chunk
                line.slot = new
                line.valid |= m
                line.dirty |= m
                self._seal(key, line)
                self._release_header(old)
                self._free.append(old)
                continue
            if len(self._dirty) >= self.max_dirty:
                if not self._make_room():
                    self._write_through(lun, idx * 8 + s, chunk)
                    continue
                line = lines.get(key)
            if line is None:
                slot = self._alloc()
                line = _Line(slot, m, m)
                self._add_line(key, line)
            else:  # clean: its data is on the drives, so it may change in place
                self.write_hit_blocks += e - s
                self._clean.pop(key, None)
                line.valid |= m
                line.dirty = m
            d = db + line.slot * LINE_BYTES
            mm[d + s * BLOCK : d + e * BLOCK] = chunk
            self._seal(key, line)
            self._set_dirty(key)

    def _write_through(self, lun: int, lba: int, mv: memoryview) -> None:
        """Straight to the drives; cached lines of the range are written out first, then dropped."""
        count = len(mv) // BLOCK
        self.write_blocks += count
        if lun in self._lines_per_lun:
            base = lun << LUN_SHIFT
            keys = [base | i for i in range(lba >> 3, ((lba + count - 1) >> 3) + 1) if base | i in self.lines]
            dirty = [k for k in keys if k in self._dirty]
            if dirty:
                self._destage(dirty)
                if any(k in self._dirty for k in dirty):
                    # Older acknowledged data of this range could not be written out: writing
                    # the new data past it would let the old overwrite it later. Refuse instead.
                    err = self.no_space.get(lun) or self.errors.get(lun) or CacheError("destage failed")
                    raise err.with_traceback(None)  # (a stored error: no traceback piling up)
            self.volumes[lun].write(lba, mv)
            for k in keys:
                line = self.lines.get(k)
                if line is not None and not line.dirty:
                    self._clean.pop(k, None)
                    self._remove_line(k)
                    self._free.append(line.slot)
            return
        self.volumes[lun].write(lba, mv)

    # ================================================================= destage
    def _destage(self, keys: Iterable[int]) -> int:
        """Write the dirty blocks of `keys` (sorted here) to the drives, coalesced; return bytes."""
        order = sorted(keys)
        mv = self._mv
        assert mv is not None
        db = self._data_base
        runs: list[tuple[int, int, list[memoryview], list[int]]] = []
        cur_lun = -1
        cur_end = -1
        parts: list[memoryview] = []
        members: list[int] = []
        start = 0
        lines = self.lines
        for key in order:
            line = lines[key]
            lun = key >> LUN_SHIFT
            lb = (key & LINE_MASK) * LINE_BLOCKS
            d = db + line.slot * LINE_BYTES
            for rs, re in RUNS[line.dirty]:
                if lun != cur_lun or lb + rs != cur_end:
                    if parts:
                        runs.append((cur_lun, start, parts, members))
                    parts, members = [], []
                    cur_lun, start = lun, lb + rs
                parts.append(mv[d + rs * BLOCK : d + re * BLOCK])
                if not members or members[-1] != key:
                    members.append(key)
                cur_end = lb + re
        if parts:
            runs.append((cur_lun, start, parts, members))
        total = 0
        failed: set[int] = set()
        for lun, start, parts, members in runs:
            vol = self.volumes.get(lun)
            if vol is None:
                failed.update(members)
                continue
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                vol.write(start, data)
            except OSError as exc:
                failed.update(members)
                exc.__traceback__ = None  # its frames hold views of the mapping: close() needs them gone
                if exc.errno not in _NO_SPACE:
                    self.errors[lun] = exc
                elif lun not in self.no_space:
                    self.no_space[lun] = exc
                    if self.on_no_space is not None:
                        self.on_no_space(lun, exc)
                continue
            except Exception as exc:  # the drive side failed: keep the data, report
                exc.__traceback__ = None
                self.errors[lun] = exc
                failed.update(members)
                continue
            if lun in self.no_space:
                del self.no_space[lun]
                if self.on_no_space is not None:
                    self.on_no_space(lun, None)
            self.destage_writes += 1
            total += len(data)
        for key in order:
            if key in failed:
                continue
            ln = lines.get(key)
            if ln is None or not ln.dirty:
                continue
            self._release_header(ln.slot)  # on the drives now: the slot no longer needs replaying
            ln.dirty = 0
            self._clear_dirty(key)
            if len(self._clean) < self.max_clean:
                self._clean[key] = None
            else:
                self._remove_line(key)
                self._free.append(ln.slot)
        if total:
            self.destaged_bytes += total
            self._rate.append((self.clock.now(), total))
        return total

    def _destage_oldest(self, n: int) -> int:
        if n <= 0 or not self._dirty:
            return 0
        keys = []
        for k in self._dirty:
            keys.append(k)
            if len(keys) >= n:
                break
        return self._destage(keys)

    def step(self, budget: int = STEP_BYTES) -> int:
        """One background destage step: the next dirty lines in (LUN, LBA) order, up to `budget` bytes."""
        if not self._dirty:
            self._due = None
            return 0
        order = sorted(self._dirty)
        i = bisect_left(order, self._cursor)
        lines = self.lines
        picked: list[int] = []
        size = 0
        n = len(order)
        for j in range(n):
            k = order[(i + j) % n]
            picked.append(k)
            size += lines[k].dirty.bit_count() * BLOCK
            if size >= budget:
                break
        self._cursor = picked[-1] + 1
        done = self._destage(picked)
        now = self.clock.now()
        self._due = now if self._dirty else None
        if not done and self._dirty:
            self._due = now + 1.0  # the drive side fails: retry later
        return done

    def next_deadline(self) -> float | None:
        if not self._dirty:
            return None
        if len(self._dirty) >= self.high_water:
            return self.clock.now()
        if self._due is None:
            self._due = self.clock.now() + DESTAGE_DELAY
        return self._due

    def destage_all(self) -> int:
        total = 0
        while self._dirty:
            done = self._destage(list(self._dirty))
            total += done
            if not done:
                break
        return total

    def flush(self, lun: int, lba: int = 0, count: int | None = None) -> None:
        """Unwritten data of `lun` (in [lba, lba+count) if given) to the drives, then fdatasync."""
        vol = self.volumes[lun]
        if self._dirty_per_lun.get(lun):
            base = lun << LUN_SHIFT
            if count is not None and count <= 4096:
                if count > 0:
                    keys = [base | i for i in range(lba >> 3, ((lba + count - 1) >> 3) + 1)
                            if base | i in self._dirty]
                else:
                    keys = []
            else:
                lo = base | (lba >> 3)
                hi = base | LINE_MASK if count is None else base | ((lba + count - 1) >> 3)
                keys = [k for k in self._dirty if lo <= k <= hi]
            if keys:
                self._destage(keys)
            err = self.errors.get(lun) or self.no_space.get(lun)
            if err is not None and self._dirty_per_lun.get(lun):
                raise err.with_traceback(None)
        vol.flush()

    # ================================================================ losses
    def drop_lun(self, lun: int) -> int:
        """Forget every line of `lun` (a deleted logical drive); return the dirty blocks dropped."""
        if lun not in self._lines_per_lun:
            return 0
        lost = 0
        for key in [k for k in self.lines if k >> LUN_SHIFT == lun]:
            line = self._remove_line(key)
            if line.dirty:
                lost += line.dirty.bit_count()
                self._clear_dirty(key)
                self._release_header(line.slot)
            self._clean.pop(key, None)
            self._free.append(line.slot)
        self.errors.pop(lun, None)
        self.no_space.pop(lun, None)
        return lost

    def drop_all(self) -> dict[int, tuple[int, int]]:
        """The cache memory lost power: everything goes. Returns {LUN: (dirty blocks, first LBA)}."""
        lost: dict[int, tuple[int, int]] = {}
        for key in self._dirty:
            line = self.lines[key]
            lun = key >> LUN_SHIFT
            lba = (key & LINE_MASK) * LINE_BLOCKS + RUNS[line.dirty][0][0]
            n = line.dirty.bit_count()
            blocks, first = lost.get(lun, (0, lba))
            lost[lun] = (blocks + n, min(first, lba))
        self._forget()
        assert self._mm is not None
        self._mm[self._hdr_base : self._data_base] = bytes(self._data_base - self._hdr_base)
        self._free = list(range(self.slots - 1, -1, -1))
        self.errors.clear()
        self.no_space.clear()
        return lost

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

    def destage_rate(self, window: float = 10.0) -> float:
        now = self.clock.now()
        while self._rate and self._rate[0][0] < now - window:
            self._rate.popleft()
        return sum(n for _, n in self._rate) / window

    def stats(self) -> dict[str, Any]:
        return {
            "size_bytes": self.slots * LINE_BYTES,
            "line_bytes": LINE_BYTES,
            "ratio_read_percent": self.ratio_read_percent,
            "ratio_write_percent": 100 - self.ratio_read_percent,
            "dirty_bytes": self.dirty_bytes,
            "dirty_limit_bytes": self.max_dirty * LINE_BYTES,
            "clean_bytes": len(self._clean) * LINE_BYTES,
            "read_hit_rate": round(self.read_hit_blocks / self.read_blocks, 4) if self.read_blocks else 0.0,
            "write_hit_rate": round(self.write_hit_blocks / self.write_blocks, 4) if self.write_blocks else 0.0,
            "read_bytes": self.read_blocks * BLOCK,
            "write_bytes": self.write_blocks * BLOCK,
            "destaged_bytes": self.destaged_bytes,
            "destage_writes": self.destage_writes,
            "destage_rate_bytes_per_s": round(self.destage_rate(), 1),
            # why the unwritten data cannot go to the drives now (None: nothing stops it)
            "destage_blocked": "; ".join(f"LUN {lun}: no space left for the drive images ({exc.strerror})"
                                         for lun, exc in sorted(self.no_space.items())) or None,
        }


class CachedVolume:
    """What a logical drive's BlockUnit sees: the drive's LdVolume behind the shared cache."""

    def __init__(self, cache: WriteCache, lun: int, inner: Volume) -> None:
        self.cache = cache
        self.lun = lun
        self.inner = inner
        self.block_size = inner.block_size
        cache.attach(lun, inner)

    @property
    def num_blocks(self) -> int:
        return self.inner.num_blocks

    def read(self, lba: int, count: int) -> bytes:
        return self.cache.read(self.lun, lba, count)

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        self.cache.write(self.lun, lba, data)

    def flush(self) -> None:
        self.cache.flush(self.lun)

    def flush_range(self, lba: int, count: int | None) -> None:
        self.cache.flush(self.lun, lba, count)


def benchmark(path: Path, n: int = 50000) -> dict[str, float]:
    """Python micro-benchmark: 4 KiB random writes into a 128 MiB cache, and destaging them."""
    import random

    class _Null:
        block_size = BLOCK
        num_blocks = 1 << 24

        def __init__(self) -> None:
            self.written = 0
            self.writes = 0

        def read(self, lba: int, count: int) -> bytes:
            return bytes(count * BLOCK)

        def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
            self.written += len(data)
            self.writes += 1

        def flush(self) -> None:
            pass

    class _Clock:
        def now(self) -> float:
            return time.monotonic()

    cache = WriteCache(path, 128 * MIB, _Clock(), ratio_read_percent=0)
    cache.write_back = True
    vol = _Null()
    cache.attach(1, vol)
    rnd = random.Random(1)
    data = rnd.randbytes(LINE_BYTES)
    span = 1 << 21  # 8 GiB of lines
    lbas = [rnd.randrange(0, span) * 8 for _ in range(min(n, cache.max_dirty))]
    t0 = time.perf_counter()
    for lba in lbas:
        cache.write(1, lba, data)
    t1 = time.perf_counter()
    cache.destage_all()
    t2 = time.perf_counter()
    seq = rnd.sample(range(min(n, cache.max_dirty)), min(n, cache.max_dirty))  # shuffled, contiguous
    t3 = time.perf_counter()
    for i in seq:
        cache.write(1, i * 8, data)
    t4 = time.perf_counter()
    before = vol.writes
    cache.destage_all()
    t5 = time.perf_counter()
    over = [rnd.randrange(0, 4096) * 8 for _ in range(n)]  # overwrites of cached lines (copy on write)
    t6 = time.perf_counter()
    for lba in over:
        cache.write(1, lba, data)
    t7 = time.perf_counter()
    cache.close()
    return {
        "write_4k_new_lines_per_s": len(lbas) / (t1 - t0),
        "write_4k_overwrite_per_s": n / (t7 - t6),
        "destage_random_mb_per_s": len(lbas) * LINE_BYTES / MIB / (t2 - t1),
        "write_4k_shuffled_seq_per_s": len(seq) / (t4 - t3),
        "destage_coalesced_mb_per_s": len(seq) * LINE_BYTES / MIB / (t5 - t4),
        "coalesced_volume_writes": vol.writes - before,
    }


if __name__ == "__main__":  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for k, v in benchmark(Path(tmp) / CACHE_FILE).items():
            print(f"{k}: {v:,.0f}")
