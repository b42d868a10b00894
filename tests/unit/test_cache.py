"""The array accelerator: write-back in a mapped file, crash replay, torn slots, destaging, FUA/SYNC."""

from __future__ import annotations

import mmap
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from firmware_model import cache as cachemod
from firmware_model.cache import CACHE_FILE, HDR_BYTES, LINE_BYTES, CacheSettings, WriteCache
from firmware_model.clock import VirtualClock
from firmware_model.controller import Controller, ControllerError, ShelfSpec
from firmware_model.scsi.types import Status
from tests.unit.shelf_helpers import (
    MIB,
    Clocked,
    codes,
    execute,
    pattern,
    read,
    release_opened,
    run_idle,
    small_spec,
    write,
)


def cache_spec(size_mb: int = 4, **kw: Any) -> ShelfSpec:
    """The small test shelf (LUN 1 RAID 1 8 MiB, LUN 2 RAID 5 over 4 drives, 16 KiB stripe unit)."""
    spec = small_spec()
    spec.cache = CacheSettings(size_mb=size_mb, **kw)
    return spec


def on_drives(c: Controller, lun: int, lba: int, blocks: int) -> bytes:
    """What the drive images hold, past the cache (the logical drive's RAID volume)."""
    view = c.lds[lun].view
    assert view is not None
    return view.read(lba, blocks)


def write_fua(c: Controller, lun: int, lba: int, data: bytes) -> Status:
    cdb = struct.pack(">BBIBHB", 0x2A, 0x08, lba, 0, len(data) // 512, 0)
    return execute(c, lun, cdb, data).status


def sync_cache(c: Controller, lun: int, lba: int = 0, blocks: int = 0) -> Status:
    return execute(c, lun, struct.pack(">BBIBHB", 0x35, 0, lba, 0, blocks, 0)).status


def count_reads(c: Controller, bays: tuple[int, ...]) -> list[int]:
    """Count the member reads of the drives in `bays` from now on: the list's one item."""
    count = [0]

    def wrap(f: Any) -> Any:
        def r(off: int, n: int) -> bytes:
            count[0] += 1
            return f(off, n)
        return r

    for b in bays:
        d = c.enclosure.bays[b]
        assert d is not None
        d.read = wrap(d.read)  # type: ignore[method-assign]
    return count


@pytest.fixture
def env() -> Clocked:
    return Clocked()


# ------------------------------------------------------------------------ write-back
def test_write_is_acknowledged_from_the_cache_and_destaged_later(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    old = on_drives(c, 2, 100, 16)
    new = pattern(1, 16 * 512)
    assert write(c, 2, 100, new).status == Status.GOOD
    assert on_drives(c, 2, 100, 16) == old  # not on the drives yet
    assert read(c, 2, 100, 16).data == new  # but every read sees it
    assert c.cache_stats()["dirty_bytes"] == 16 * 512
    assert c.next_deadline() is not None
    run_idle(c, env.clock)
    assert on_drives(c, 2, 100, 16) == new
    assert c.cache_stats()["dirty_bytes"] == 0 and c.next_deadline() is None


def test_unaligned_writes_merge_with_the_drive_contents(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    base = pattern(2, 64 * 512)
    assert write_fua(c, 1, 0, base) == Status.GOOD
    shadow = bytearray(base)
    for lba, n in ((3, 1), (7, 2), (13, 10), (30, 3), (3, 5)):
        data = pattern(lba * 100 + n, n * 512)
        assert write(c, 1, lba, data).status == Status.GOOD
        shadow[lba * 512 : (lba + n) * 512] = data
        for a, b in ((0, 64), (2, 9), (5, 1), (29, 6)):
            assert read(c, 1, a, b).data == bytes(shadow[a * 512 : (a + b) * 512])
    run_idle(c, env.clock)
    assert on_drives(c, 1, 0, 64) == bytes(shadow)


def test_kill9_loses_no_acknowledged_write(env: Clocked, tmp_path: Path) -> None:
    """The process dies (no close, no flush): a new controller on the state dir replays the cache."""
    c = env.open(tmp_path, cache_spec())
    rnd = random.Random(3)
    shadow = {1: bytearray(on_drives(c, 1, 0, 2048)), 2: bytearray(on_drives(c, 2, 0, 2048))}
    for i in range(300):
        lun = rnd.choice((1, 2))
        lba = rnd.randrange(0, 2000)
        n = rnd.choice((1, 3, 8, 8, 16, 40))
        data = pattern(i, n * 512)
        assert write(c, lun, lba, data).status == Status.GOOD
        shadow[lun][lba * 512 : (lba + n) * 512] = data
        if i == 150:
            c.advance(env.clock.now() + 1)  # some of it destaged meanwhile
    assert c.cache.dirty_lines > 0
    del c  # kill -9: nothing more runs in the old process
    c2 = env.open(tmp_path, cache_spec())
    assert "CACHE_REPLAYED" in codes(c2)
    assert c2.cache.dirty_lines == 0
    for lun in (1, 2):
        assert on_drives(c2, lun, 0, 2048) == bytes(shadow[lun])
        assert read(c2, lun, 0, 2048).data == bytes(shadow[lun])


def _headers(path: Path) -> list[tuple[int, int, int, int, int]]:
    """(slot, seq, lba, lun, mask) of every header with a sequence number."""
    raw = path.read_bytes()
    slots = struct.unpack_from("<8sIII", raw)[3]
    out = []
    for slot in range(slots):
        h = 4096 + slot * HDR_BYTES
        seq, lba, lun, mask = struct.unpack_from("<QQHB", raw, h)
        if seq:
            out.append((slot, seq, lba, lun, mask))
    return out


def test_a_torn_slot_is_ignored_and_the_older_copy_replayed(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    v1 = pattern(1, 8 * 512)
    assert write(c, 2, 80, v1).status == Status.GOOD
    path = tmp_path / CACHE_FILE
    del c
    # The crash came while a newer copy of the line was being written to a free slot: its
    # header made it, part of its data did not (a CRC mismatch).
    (slot, seq, lba, lun, _mask), = _headers(path)
    geometry = WriteCache._geometry(struct.unpack_from("<8sIII", path.read_bytes())[3])
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 0)
        torn = slot + 1
        d = geometry[0] + torn * LINE_BYTES
        m[d : d + LINE_BYTES] = pattern(2, LINE_BYTES)
        hdr = struct.pack("<QQHB5x", seq + 1, lba, lun, 0xFF)
        good = cachemod._crc(m[d : d + LINE_BYTES], cachemod._crc(hdr))
        m[4096 + torn * HDR_BYTES : 4096 + torn * HDR_BYTES + 28] = hdr + struct.pack("<I", good)
        m[d + 1000] ^= 0x55  # torn data
        garbage = slot + 2  # and a header half written into another free slot
        m[4096 + garbage * HDR_BYTES : 4096 + garbage * HDR_BYTES + 11] = b"\x07" * 11
        m.close()
    c2 = env.open(tmp_path, cache_spec())
    assert c2.cache.torn == 2
    assert on_drives(c2, 2, 80, 8) == v1
    assert read(c2, 2, 80, 8).data == v1
    assert "2 torn slots ignored" in str(c2.events()[-3:])


class _Killed(BaseException):  # not caught by the target: nothing runs after a kill
    pass


class _DyingMap:
    """The cache's mapping, but the process dies at store number `at` (half of it stored)."""

    def __init__(self, real: mmap.mmap, at: int) -> None:
        self.real = real
        self.at = at
        self.n = 0

    def _tick(self) -> bool:
        self.n += 1
        return self.n == self.at

    def __setitem__(self, key: slice, value: Any) -> None:
        if self._tick():
            half = (key.stop - key.start) // 2
            self.real[key.start : key.start + half] = bytes(value)[:half]
            raise _Killed
        self.real[key] = value

    def __getitem__(self, key: slice) -> bytes:
        return self.real[key]

    def move(self, dst: int, src: int, n: int) -> None:
        if self._tick():
            self.real.move(dst, src, n // 2)
            raise _Killed
        self.real.move(dst, src, n)


def test_a_kill_at_any_store_leaves_old_or_new_data_never_garbage(env: Clocked, tmp_path: Path) -> None:
    """Kill the writer at every single store of a copy-on-write, a new line and a destage."""
    spec = cache_spec()

    def scenario(c: Controller) -> None:
        assert write(c, 2, 8, pattern(11, 4 * 512)).status == Status.GOOD  # dirty, partial line

    v_old = None
    for at in range(1, 40):
        release_opened()  # the last round's killed controllers
        d = tmp_path / f"k{at}"
        c = env.open(d, spec)
        scenario(c)
        acked = bytes(read(c, 2, 0, 32).data)
        v_old = on_drives(c, 2, 0, 32)
        new = pattern(12 + at, 20 * 512)  # lines 1-3 of LBA 4-23: a COW, a new line, a partial one
        dying = _DyingMap(c.cache._mm, at)  # type: ignore[arg-type]
        c.cache._mm = dying  # type: ignore[assignment]
        try:
            write(c, 2, 4, new)
            c.advance(env.clock.now() + 1)  # and the destage of it all
            finished = True
        except _Killed:
            finished = False
        del c
        c2 = env.open(d, spec)
        got = read(c2, 2, 0, 32).data
        expect_new = bytearray(acked)
        expect_new[4 * 512 : 24 * 512] = new
        for b in range(32):
            blk = got[b * 512 : (b + 1) * 512]
            assert blk in (acked[b * 512 : (b + 1) * 512], expect_new[b * 512 : (b + 1) * 512]), (at, b)
        if finished:
            assert got == bytes(expect_new)
            break
    else:
        pytest.fail("the scenario never finished")
    assert v_old is not None


# ------------------------------------------------------------------------ destaging
def test_destage_coalesces_shuffled_writes_into_full_stripes(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    ld = c.lds[2]
    stripe_blocks = 3 * 16 * 1024 // 512  # 3 data members x 16 KiB
    calls: list[tuple[int, int]] = []
    real_write = ld.volume.write

    def counting(lba: int, data: Any) -> None:
        calls.append((lba, len(data) // 512))
        real_write(lba, data)

    ld.volume.write = counting  # type: ignore[method-assign]
    member_reads = count_reads(c, (3, 4, 5, 6))
    lines = list(range(4 * stripe_blocks // 8))
    random.Random(5).shuffle(lines)
    data = pattern(7, 4 * stripe_blocks * 512)
    for i in lines:
        assert write(c, 2, stripe_blocks + i * 8, data[i * 4096 : (i + 1) * 4096]).status == Status.GOOD
    assert calls == []
    run_idle(c, env.clock)
    assert calls == [(stripe_blocks, 4 * stripe_blocks)]  # one write: four full stripes
    assert member_reads == [0]  # full-stripe writes: no read-modify-write
    assert c.cache.stats()["destage_writes"] == 1
    assert on_drives(c, 2, stripe_blocks, 4 * stripe_blocks) == data


def test_a_stream_past_the_cache_writes_whole_stripes_and_reads_nothing_back(env: Clocked, tmp_path: Path) -> None:
    # 1 MiB writes bypass the cache (cache/settings.py BYPASS_BLOCKS); on RAID 5 (3 data members x
    # 16 KiB: 96 blocks a stripe, which 2048 is not a multiple of) only their whole stripes do: the
    # partial ones at either end are cached, and the next write of the stream completes them
    c = env.open(tmp_path, cache_spec())
    stripe_blocks = 3 * 16 * 1024 // 512
    member_reads = count_reads(c, (3, 4, 5, 6))
    data = pattern(11, 6 * MIB)
    cached = 0
    for i in range(6):
        lba, end = i * 2048, (i + 1) * 2048
        assert write(c, 2, lba, data[i * MIB : (i + 1) * MIB]).status == Status.GOOD
        head, tail = -lba % stripe_blocks, end % stripe_blocks
        a, b = lba + head, end - tail
        assert on_drives(c, 2, a, b - a) == data[a * 512 : b * 512]  # its whole stripes: on the drives now
        cached += head + tail
        assert c.cache_stats()["dirty_bytes"] == cached * 512  # its partial ones: in the cache
    assert member_reads == [0]
    assert 6 * 2048 % stripe_blocks == 0  # the stream ends on a stripe boundary: every partial one completed
    run_idle(c, env.clock)
    assert c.cache_stats()["dirty_bytes"] == 0
    assert member_reads == [0]  # whole stripes only, the destaged ones too: no read-modify-write
    assert on_drives(c, 2, 0, 6 * 2048) == data


def test_a_full_cache_destages_just_enough_inline(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec(size_mb=1, ratio_read_percent=50))  # 256 lines, ~112 dirty
    limit = c.cache.max_dirty
    rnd = random.Random(9)
    shadow = bytearray(on_drives(c, 2, 0, 16384))
    for i in range(600):
        lba = rnd.randrange(0, 16384 // 8) * 8
        data = pattern(i, 4096)
        assert write(c, 2, lba, data).status == Status.GOOD
        shadow[lba * 512 : lba * 512 + 4096] = data
        assert c.cache.dirty_lines <= limit
    assert c.cache.destage_writes > 0  # no advance() was called: the writes made room themselves
    assert read(c, 2, 0, 16384).data == bytes(shadow)
    run_idle(c, env.clock)
    assert on_drives(c, 2, 0, 16384) == bytes(shadow)


def test_background_destage_is_bounded_per_step(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec(size_mb=32, ratio_read_percent=0))
    for i in range(0, 12 * 2048, 256):  # 12 MiB of dirty data
        assert write(c, 2, i, pattern(i, 256 * 512)).status == Status.GOOD
    dirty = c.cache.dirty_bytes
    assert dirty == 12 * MIB
    c.advance(env.clock.now() + 1)
    assert dirty - c.cache.dirty_bytes <= cachemod.STEP_BYTES
    steps = run_idle(c, env.clock)
    assert 2 <= steps <= 4


def test_the_destage_rate_remembers_seconds_not_destages(env: Clocked, tmp_path: Path) -> None:
    """Ten minutes of small destages that nobody asks the rate of keeps ~RATE_WINDOW_S entries (it kept
    one per destage: the soak's memory growth), and the rate is what went out in the window."""
    from firmware_model.cache.write_cache import RATE_WINDOW_S

    c = env.open(tmp_path, cache_spec())
    for i in range(600):  # one 4 KiB write destaged every second, ten minutes long
        assert write(c, 2, (i * 8) % 8192, pattern(i, 8 * 512)).status == Status.GOOD
        c.cache.flush(2)  # destaged now: one small destage per second
        env.clock.advance(1.0)
    assert len(c.cache._rate) <= RATE_WINDOW_S + 2
    assert c.cache.destage_rate() == pytest.approx(8 * 512, rel=0.25)
    env.clock.advance(RATE_WINDOW_S + 1)
    assert c.cache.destage_rate() == 0


# ------------------------------------------------------------------------ host semantics
def test_fua_and_synchronize_cache_reach_the_drive_images(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    a = pattern(1, 8 * 512)
    assert write(c, 1, 0, a).status == Status.GOOD
    b = pattern(2, 8 * 512)
    assert write_fua(c, 1, 64, b) == Status.GOOD
    assert on_drives(c, 1, 64, 8) == b  # FUA: on the drives before GOOD
    assert on_drives(c, 1, 0, 8) != a  # the other write is still cached
    x = pattern(3, 8 * 512)
    assert write(c, 2, 0, x).status == Status.GOOD
    assert sync_cache(c, 1, 100, 10) == Status.GOOD  # a range without dirty data: nothing moves
    assert on_drives(c, 1, 0, 8) != a
    assert sync_cache(c, 1) == Status.GOOD  # the whole LUN
    assert on_drives(c, 1, 0, 8) == a
    assert on_drives(c, 2, 0, 8) != x  # only that logical drive
    assert c.cache.dirty_luns() == {2: 1}


def test_reads_hit_the_read_cache(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    assert write_fua(c, 2, 0, pattern(4, 64 * 512)) == Status.GOOD
    read(c, 2, 0, 64)
    before = c.cache.read_hit_blocks
    assert read(c, 2, 8, 16).data == pattern(4, 64 * 512)[8 * 512 : 24 * 512]
    assert c.cache.read_hit_blocks == before + 16
    assert c.cache_stats()["read_hit_rate"] > 0


def test_set_cache_ratio_size_and_disable(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    for bad in ({"ratio_read_percent": 30}, {"size_mb": 0}, {"enabled": "yes"}, {}):
        with pytest.raises(ControllerError):
            c.set_cache(**bad)  # type: ignore[arg-type]
    assert write(c, 1, 0, pattern(1, 4096)).status == Status.GOOD
    with pytest.raises(ControllerError, match="not yet written"):
        c.set_cache(size_mb=8)
    st = c.set_cache(enabled=False, size_mb=8)  # disabling writes it out, then the size may change
    assert st["state"] == "write-through" and st["size_mb"] == 8 and st["dirty_bytes"] == 0
    assert on_drives(c, 1, 0, 8) == pattern(1, 4096)
    assert write(c, 1, 0, pattern(2, 4096)).status == Status.GOOD
    assert on_drives(c, 1, 0, 8) == pattern(2, 4096)  # write-through
    c.set_cache(enabled=True, ratio_read_percent=100)  # 100 % read: no write cache
    assert c.cache_stats()["state"] == "write-through"
    c.set_cache(ratio_read_percent=25)
    st = c.cache_stats()
    assert st["state"] == "write-back" and st["ratio_write_percent"] == 75
    assert "CACHE_SETTINGS" in codes(c)
    c.close()
    c2 = env.open(tmp_path, cache_spec())  # the settings live in NVRAM, not in the spec
    st = c2.describe()["cache"]
    assert (st["size_mb"], st["ratio_read_percent"], st["state"]) == (8, 25, "write-back")


def test_deleting_a_logical_drive_drops_its_cache_lines(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, cache_spec())
    assert write(c, 2, 0, pattern(1, 4096)).status == Status.GOOD
    c.delete_unit(2)
    assert c.cache.dirty_lines == 0
    c.add_unit(2, [3, 4, 5, 6], raid="5", size_bytes=8 * MIB, stripe_kib=16)
    assert read(c, 2, 0, 8).data == bytes(4096)


def test_cache_unit_level_geometry_and_reuse(tmp_path: Path) -> None:
    clock = VirtualClock()
    wc = WriteCache(tmp_path / CACHE_FILE, 1 * MIB, clock, ratio_read_percent=0)
    assert wc.slots == 256 and wc.max_dirty == 256 - 16
    wc.close()
    wc = WriteCache(tmp_path / CACHE_FILE, 2 * MIB, clock)  # an empty file of another size
    assert wc.slots == 256 and wc.want_slots == 512
    wc.resize(2 * MIB)
    assert wc.slots == 512
    wc.close()
