"""WriteCache: the accelerator's read, write and destage, over its mapped file.

A WRITE is acknowledged only after its data and a checksummed header are in the mapping
(see .layout for the file and its crash safety). Clean lines stay as a read cache (LRU) in
the read share of the memory; the write share bounds the unwritten data. Destaging coalesces
dirty lines in (LUN, LBA) order into contiguous runs: one volume write per run, so runs
covering whole stripes are full-stripe writes for the RAID layer.
"""

from __future__ import annotations

import errno
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

from .. import drive_io
from ..clock import Clock
from ..scsi.errors import ScsiError
from ..scsi.stepped import Wait
from ..scsi.types import BlockVolume
from .cache_file import CacheFile
from .index import _Line
from .layout import (
    BLOCK,
    FULL,
    LINE_BLOCKS,
    LINE_BYTES,
    LINE_MASK,
    LUN_SHIFT,
    RUNS,
    CacheError,
)
from .settings import BYPASS_BLOCKS, DESTAGE_DELAY, FLUSH_STEP_LINES, POPULATE_MAX_BLOCKS, RATIOS, STEP_BYTES

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
RATE_WINDOW_S = 10  # SHOW GLOBALS' destage rate: bytes per second over this many seconds

Volume = BlockVolume  # what the cache writes to and reads from (the controller's LdVolume)


class WriteCache(CacheFile):
    """The cache of one controller: lines of 8 blocks keyed by (LUN, line number)."""

    def __init__(self, path: Path, size_bytes: int, clock: Clock, *, ratio_read_percent: int = 50) -> None:
        self.write_back = False  # the controller decides (battery, settings)
        self.volumes: dict[int, Volume] = {}
        self._cursor = 0  # elevator position of the background destage
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
        # Destaged bytes per whole second of the clock, the last RATE_WINDOW_S seconds only: one
        # entry per second whatever the destage rate (a tuple per destage grew without bound
        # while nothing asked for the rate: 70 MiB in a 15-minute soak).
        self._rate: deque[list[int]] = deque()
        super().__init__(path, size_bytes, clock, ratio_read_percent)  # opens (or creates) the file

    # ================================================================= room
    def set_ratio(self, read_percent: int) -> None:
        """Read share 0-100 % in steps of 25; unwritten data above the new write share is destaged now."""
        if read_percent not in RATIOS:
            raise CacheError(f"read/write ratio {read_percent}: the read share is 0, 25, 50, 75 or 100 %")
        self.ratio_read_percent = read_percent
        self._limits()
        if len(self._dirty) > self.max_dirty:
            self._destage_oldest(len(self._dirty) - self.max_dirty)

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
        if self.write_back and count >= BYPASS_BLOCKS:
            self._bypass(lun, lba, mv)
            return
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

    def _bypass(self, lun: int, lba: int, mv: memoryview) -> None:
        """A write past the cache (BYPASS_BLOCKS or more): its whole stripes go straight to the drives.

        On a parity volume the partial stripes at either end stay in the cache, where the next write
        of a stream completes them, so the destage writes whole stripes and neither write reads old
        data or parity back (full-stripe coalescing, as Smart Array's cache does)."""
        count = len(mv) // BLOCK
        whole = getattr(self.volumes[lun], "full_stripe_blocks", 0)
        head = -lba % whole if whole else 0
        tail = (lba + count) % whole if whole else 0
        if not (head or tail) or count - head - tail < whole:
            self._write_through(lun, lba, mv)
            return
        if head:
            self.write(lun, lba, mv[: head * BLOCK])
        self._write_through(lun, lba + head, mv[head * BLOCK : (count - tail) * BLOCK])
        if tail:
            self.write(lun, lba + count - tail, mv[(count - tail) * BLOCK :])

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
            self._count_destaged(total)
        return total

    def _count_destaged(self, n: int) -> None:
        now = self.clock.now()
        second = int(now)
        rate = self._rate
        if rate and rate[-1][0] == second:
            rate[-1][1] += n
        else:
            rate.append([second, n])
        while rate[0][0] < now - RATE_WINDOW_S - 1:
            rate.popleft()

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
        keys = self._flush_keys(lun, lba, count)
        if keys:
            self._destage(keys)
        self._flush_error(lun)
        self.volumes[lun].flush()

    def flush_steps(self, lun: int, lba: int = 0, count: int | None = None) -> Generator[Wait, None, None]:
        """`flush` in steps (scsi/stepped.py): FLUSH_STEP_LINES lines destaged per step, then every
        drive's fdatasync on the drive-I/O threads while the event loop serves other sessions."""
        keys = self._flush_keys(lun, lba, count)
        for i in range(0, len(keys), FLUSH_STEP_LINES):
            batch = [k for k in keys[i:i + FLUSH_STEP_LINES] if k in self._dirty]  # not destaged meanwhile
            if batch:
                self._destage(batch)
            yield None
        self._flush_error(lun)
        vol = self.volumes[lun]
        fds = getattr(vol, "sync_fds", None)
        if fds is None:
            vol.flush()
            return
        done = drive_io.sync_all(fds())
        yield done
        done.result()  # an fdatasync's OSError, as flush() would raise it

    def _flush_keys(self, lun: int, lba: int, count: int | None) -> list[int]:
        if not self._dirty_per_lun.get(lun):
            return []
        base = lun << LUN_SHIFT
        if count is not None and count <= 4096:
            if count <= 0:
                return []
            return [base | i for i in range(lba >> 3, ((lba + count - 1) >> 3) + 1) if base | i in self._dirty]
        lo = base | (lba >> 3)
        hi = base | LINE_MASK if count is None else base | ((lba + count - 1) >> 3)
        return [k for k in self._dirty if lo <= k <= hi]

    def _flush_error(self, lun: int) -> None:
        err = self.errors.get(lun) or self.no_space.get(lun)
        if err is not None and self._dirty_per_lun.get(lun):
            raise err.with_traceback(None)

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

    # ================================================================= stats
    def destage_rate(self) -> float:
        """Bytes per second destaged over the last RATE_WINDOW_S seconds (to the second)."""
        since = self.clock.now() - RATE_WINDOW_S
        return sum(n for second, n in self._rate if second >= since) / RATE_WINDOW_S

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


