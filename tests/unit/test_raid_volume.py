"""RaidVolume: what is written is read back, through failures, media errors and rebuilds.

An in-memory FakeMember asserts the engine never reads a failed member or the unrebuilt part
of a rebuilding one; a failed member's bytes are scrambled and a replacement starts with junk,
so any reliance on stale data shows up as a wrong read against the shadow copy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_model.raid import fast_read, parity
from firmware_model.raid.api import (
    DriveError,
    MemberState,
    RaidLevel,
    UnrecoverableRead,
    VolumeFailed,
)
from firmware_model.raid.volume import RaidVolume, restripe

BS = 512
SU = 16 * 1024
OK, FAILED, REBUILDING = MemberState.OK, MemberState.FAILED, MemberState.REBUILDING


@dataclass
class FakeMember:
    """A member in a bytearray with a settable state and injectable faults."""

    buf: bytearray
    state: MemberState = OK
    rebuilt_to: int = 0
    bad: list[tuple[int, int]] = field(default_factory=list)  # media error ranges (reads only)
    fail_writes: bool = False
    reads: int = 0
    flushes: int = 0
    failed_once: bool = False
    remap: bool = False  # a write clears the media errors it covers, as a real drive remaps

    def read(self, offset: int, length: int) -> bytes:
        assert self.state is not FAILED, "engine read a failed member"
        if self.state is REBUILDING:
            assert offset + length <= self.rebuilt_to, "engine read the unrebuilt part of a member"
        assert 0 <= offset and offset + length <= len(self.buf)
        for bo, bl in self.bad:
            if bo < offset + length and offset < bo + bl:
                raise DriveError(bo, bl)
        self.reads += 1
        return bytes(self.buf[offset:offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        assert self.state is not FAILED, "engine wrote a failed member"
        assert 0 <= offset and offset + len(data) <= len(self.buf)
        if self.fail_writes:
            raise DriveError(offset, len(data), "drive pulled")
        self.buf[offset:offset + len(data)] = data
        if self.remap:
            self.bad = [(bo, bl) for bo, bl in self.bad if bo + bl <= offset or offset + len(data) <= bo]

    def flush(self) -> None:
        assert self.state is not FAILED
        self.flushes += 1


def members(n: int, size: int) -> list[FakeMember]:
    return [FakeMember(bytearray(size)) for _ in range(n)]


def make(level: RaidLevel, n: int, num_blocks: int, base: int = 0, su: int = SU, extra: int = 0,
         **kw: object) -> tuple[RaidVolume, list[FakeMember]]:
    probe = RaidVolume(level, members(n, 0), su, num_blocks, BS, base)  # type: ignore[arg-type]
    ms = members(n, base + probe.per_member_bytes + su + extra)
    return RaidVolume(level, ms, su, num_blocks, BS, base, **kw), ms  # type: ignore[arg-type]


def fail(m: FakeMember) -> None:
    m.state = FAILED
    m.buf[:] = random.Random(len(m.buf)).randbytes(len(m.buf))
    m.failed_once = True


def rebuild(vol: RaidVolume, ms: list[FakeMember], i: int, step: int = 40 * 1024) -> None:
    """Replace member i by a junk-filled drive and rebuild it in chunks, as the controller will."""
    new = FakeMember(bytearray(random.randbytes(len(ms[i].buf))), REBUILDING, vol.base_offset)
    ms[i] = new
    done = 0
    while done < vol.per_member_bytes:
        n = min(step, vol.per_member_bytes - done)
        vol.rebuild_region(i, done, n)
        done += n
        new.rebuilt_to = vol.base_offset + done
    new.state = OK


LEVELS = {RaidLevel.RAID0: [2, 3], RaidLevel.RAID1: [2], RaidLevel.RAID10: [4, 6],
          RaidLevel.RAID5: [3, 4, 5], RaidLevel.ADG: [4, 5, 6]}
TOLERANCE = {RaidLevel.RAID0: 0, RaidLevel.RAID1: 1, RaidLevel.RAID10: 1, RaidLevel.RAID5: 1, RaidLevel.ADG: 2}


def check_layout(vol: RaidVolume, ms: list[FakeMember], shadow: bytes) -> None:
    """With every member healthy: data sits where the layout says and redundancy verifies."""
    lay = vol.layout
    base = vol.base_offset
    for pc in lay.pieces(0, len(shadow)):
        for m in pc.members:
            got = ms[m].buf[base + pc.member_offset:base + pc.member_offset + pc.length]
            assert got == shadow[pc.logical_offset:pc.logical_offset + pc.length]
    for s in range(lay.stripes_for(len(shadow))):
        r = lay.roles(s)
        lo = base + s * vol.stripe_unit
        chunk = [bytes(ms[h[0]].buf[lo:lo + vol.stripe_unit]) for h in r.data]
        if r.p is not None:
            assert ms[r.p].buf[lo:lo + vol.stripe_unit] == parity.xor_blocks(chunk)
        if r.q is not None:
            assert ms[r.q].buf[lo:lo + vol.stripe_unit] == parity.q_syndrome(chunk)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("level", list(LEVELS))
def test_reads_return_last_write_through_failures_and_rebuilds(level: RaidLevel, data: st.DataObject) -> None:
    # half the examples with the large-read fast path (fast_read.py) taken by reads of any size, and
    # mirrored pieces split between their copies at block granularity
    small = data.draw(st.booleans(), "fast path for every read")
    with mock.patch.multiple(fast_read, FAST_MIN=BS if small else fast_read.FAST_MIN,
                             SPLIT_MIN=2 * BS if small else fast_read.SPLIT_MIN,
                             SPLIT_ALIGN=BS if small else fast_read.SPLIT_ALIGN):
        _reads_return_last_write(level, data)


def _reads_return_last_write(level: RaidLevel, data: st.DataObject) -> None:
    n = data.draw(st.sampled_from(LEVELS[level]), "n")
    k = {RaidLevel.RAID0: n, RaidLevel.RAID1: 1, RaidLevel.RAID10: n // 2}.get(level, n - (2 if level is
                                                                                       RaidLevel.ADG else 1))
    stripe_blocks = k * SU // BS
    num_blocks = data.draw(st.integers(stripe_blocks, 3 * stripe_blocks + 50), "blocks")
    base = data.draw(st.sampled_from([0, 4096, 3 * SU + 512]), "base")
    dropped: list[int] = []

    def on_error(i: int, e: DriveError) -> None:
        ms[i].fail_writes = False
        fail(ms[i])
        dropped.append(i)
        rebuilding.pop(i, None)

    vol, ms = make(level, n, num_blocks, base, on_member_error=on_error)
    outside = [bytes(m.buf[:base]) for m in ms]
    originals = list(ms)
    shadow = bytearray(num_blocks * BS)
    tol = TOLERANCE[level]
    rebuilding: dict[int, int] = {}  # member -> bytes of its extent rebuilt so far

    def damaged() -> set[int]:
        return {i for i, m in enumerate(ms) if m.state is not OK or m.bad or m.fail_writes}

    def may_damage(i: int) -> bool:
        return len(damaged() | {i}) <= tol

    for _ in range(data.draw(st.integers(1, 24), "ops")):
        op = data.draw(st.sampled_from(["write", "write", "stripe", "read", "fail", "rebuild", "rebuild",
                                        "media", "pull"]))
        if op in ("write", "stripe"):
            if op == "stripe":
                lba = data.draw(st.integers(0, (num_blocks - 1) // stripe_blocks)) * stripe_blocks
                count = min(data.draw(st.sampled_from([1, 2])) * stripe_blocks, num_blocks - lba)
            else:
                lba = data.draw(st.integers(0, num_blocks - 1))
                count = data.draw(st.integers(1, min(num_blocks - lba, 2 * stripe_blocks + 7)))
            buf = random.Random(data.draw(st.integers(0, 2**32))).randbytes(count * BS)
            vol.write(lba, buf)
            shadow[lba * BS:(lba + count) * BS] = buf
        elif op == "read":
            lba = data.draw(st.integers(0, num_blocks - 1))
            count = data.draw(st.integers(1, num_blocks - lba))
            assert vol.read(lba, count) == shadow[lba * BS:(lba + count) * BS]
        elif op == "fail":
            i = data.draw(st.integers(0, n - 1))
            if ms[i].state is not FAILED and may_damage(i):
                fail(ms[i])
                rebuilding.pop(i, None)
        elif op == "pull":  # the next write to it fails; the controller fails it through the callback
            i = data.draw(st.integers(0, n - 1))
            if ms[i].state is not FAILED and may_damage(i):
                ms[i].fail_writes = True
        elif op == "media":
            i = data.draw(st.integers(0, n - 1))
            if ms[i].state is not FAILED and may_damage(i):
                off = base + data.draw(st.integers(0, vol.per_member_bytes - BS))
                ms[i].bad.append((off, data.draw(st.integers(1, 3 * SU))))
        elif op == "rebuild":
            failed = [i for i, m in enumerate(ms) if m.state is FAILED]
            if rebuilding:
                i = next(iter(rebuilding))
            elif failed:
                i = data.draw(st.sampled_from(failed))
                ms[i] = FakeMember(bytearray(random.randbytes(len(ms[i].buf))), REBUILDING, base)
                rebuilding[i] = 0
            else:
                continue
            step = data.draw(st.sampled_from([BS, 8 * 1024, SU, 3 * SU + 1024, vol.per_member_bytes]))
            done = rebuilding[i]
            step = min(step, vol.per_member_bytes - done)
            try:
                vol.rebuild_region(i, done, step)
            except DriveError:  # the replacement itself fails: the controller fails it
                assert ms[i].fail_writes
                ms[i].fail_writes = False
                fail(ms[i])
                del rebuilding[i]
                continue
            done += step
            ms[i].rebuilt_to = base + done
            rebuilding[i] = done
            if done == vol.per_member_bytes:
                ms[i].state = OK
                del rebuilding[i]
        assert vol.state() != "failed"

    assert vol.read(0, num_blocks) == shadow
    for i in list(rebuilding):
        ms[i].state = FAILED
    for i, m in enumerate(ms):
        if m.state is FAILED:
            rebuild(vol, ms, i)
    for m in ms:
        m.bad.clear()
        m.fail_writes = False
    assert vol.state() == "ok" and vol.fault_tolerance() == tol
    assert vol.read(0, num_blocks) == shadow
    check_layout(vol, ms, bytes(shadow))
    for m, orig, before in zip(ms, originals, outside, strict=True):
        if m is orig and not m.failed_once:  # never failed or replaced: nothing outside the extent was touched
            assert m.buf[:base] == before
            assert not any(m.buf[base + vol.per_member_bytes:])

    # one failure too many: refused, never wrong data
    if level is RaidLevel.RAID10:
        fail(ms[0])
        fail(ms[n // 2])
    else:
        for i in range(tol + 1):
            fail(ms[i])
    assert vol.state() == "failed" and vol.fault_tolerance() == 0
    with pytest.raises(VolumeFailed):
        vol.read(0, num_blocks)
    with pytest.raises(VolumeFailed):
        vol.write(0, bytes(BS))


@pytest.mark.parametrize(("level", "n"), [(RaidLevel.RAID1, 2), (RaidLevel.RAID10, 4), (RaidLevel.RAID5, 4),
                                          (RaidLevel.ADG, 5)])
def test_untouched_bytes_outside_the_extent(level: RaidLevel, n: int) -> None:
    """Two logical drives on one array: each stays inside its own extent."""
    vol1, ms = make(level, n, 300, extra=200 * BS)
    vol2 = RaidVolume(level, ms, SU, 200, BS, base_offset=vol1.per_member_bytes)  # type: ignore[arg-type]
    assert len(ms[0].buf) >= vol1.per_member_bytes + vol2.per_member_bytes
    a, b = random.randbytes(300 * BS), random.randbytes(200 * BS)
    vol1.write(0, a)
    vol2.write(0, b)
    assert vol1.read(0, 300) == a and vol2.read(0, 200) == b
    fail(ms[1])
    assert vol1.read(0, 300) == a and vol2.read(0, 200) == b
    rebuild(vol1, ms, 1)
    ms[1].state = REBUILDING
    ms[1].rebuilt_to = vol1.per_member_bytes
    done = 0
    while done < vol2.per_member_bytes:
        vol2.rebuild_region(1, done, SU)
        done += SU
        ms[1].rebuilt_to = vol2.base_offset + done
    ms[1].state = OK
    check_layout(vol1, ms, a)
    check_layout(vol2, ms, b)


def test_raid1_members_are_identical() -> None:
    vol, ms = make(RaidLevel.RAID1, 2, 500)
    for _ in range(30):
        lba = random.randrange(500)
        vol.write(lba, random.randbytes(random.randint(1, 500 - lba) * BS))
    assert ms[0].buf == ms[1].buf


def test_raid5_stripes_xor_to_zero() -> None:
    vol, ms = make(RaidLevel.RAID5, 5, 1000)
    for _ in range(40):
        lba = random.randrange(1000)
        vol.write(lba, random.randbytes(random.randint(1, min(200, 1000 - lba)) * BS))
    for s in range(vol.layout.stripes_for(vol.size_bytes)):
        rows = [bytes(m.buf[s * SU:(s + 1) * SU]) for m in ms]
        assert parity.xor_blocks(rows) == bytes(SU)


def test_adg_p_and_q_verify_against_textbook_q() -> None:
    from tests.unit.test_raid_layout import slow_q

    vol, ms = make(RaidLevel.ADG, 5, 200, su=SU)
    vol.write(0, random.randbytes(200 * BS))
    vol.write(37, random.randbytes(5 * BS))  # a read-modify-write
    for s in range(vol.layout.stripes_for(vol.size_bytes)):
        r = vol.layout.roles(s)
        lo, hi = s * SU, s * SU + 256  # the first 256 bytes of each row, checked slowly
        data = [bytes(ms[h[0]].buf[lo:hi]) for h in r.data]
        assert r.p is not None and r.q is not None
        assert ms[r.p].buf[lo:hi] == parity.xor_blocks(data)
        assert ms[r.q].buf[lo:hi] == slow_q(data)


@pytest.mark.parametrize(("level", "n"), [(RaidLevel.RAID1, 2), (RaidLevel.RAID10, 6), (RaidLevel.RAID5, 3),
                                          (RaidLevel.ADG, 4)])
def test_media_errors_are_read_around(level: RaidLevel, n: int) -> None:
    vol, ms = make(level, n, 400)
    d = random.randbytes(400 * BS)
    vol.write(0, d)
    for i, m in enumerate(ms):  # errors on every member, at places that never share a row
        m.bad.append((i * 3 * SU + 1000, 700))
    assert vol.read(0, 400) == d
    vol.write(10, d[:300 * BS])  # writes that must read around them too
    assert vol.read(10, 300) == d[:300 * BS]


def test_media_error_on_a_degraded_raid5_is_unrecoverable_at_that_block() -> None:
    vol, ms = make(RaidLevel.RAID5, 4, 300)
    d = random.randbytes(300 * BS)
    vol.write(0, d)
    fail(ms[3])
    # stripe 0: P on member 3 (failed), data 0,1,2 on members 0,1,2; a bad block on member 1 at
    # chunk offset 5 blocks is logical block 32 + 5
    ms[1].bad.append((5 * BS, BS))
    assert vol.read(0, 37) == d[:37 * BS]
    with pytest.raises(UnrecoverableRead) as e:
        vol.read(30, 20)
    assert e.value.lba == 37
    # stripe 1: P on member 2, data on 3 (failed), 0, 1; a bad block on member 0 at offset 2 blocks
    # leaves member 3's block 2 (logical 96 + 2) without a source
    ms[0].bad.append((SU + 2 * BS, BS))
    assert vol.read(96, 2) == d[96 * BS:98 * BS]
    with pytest.raises(UnrecoverableRead) as e:
        vol.read(96, 10)
    assert e.value.lba == 98


def test_raid1_media_error_on_both_copies_names_the_block() -> None:
    vol, ms = make(RaidLevel.RAID1, 2, 100)
    vol.write(0, bytes(100 * BS))
    ms[0].bad.append((10 * BS, 20 * BS))
    ms[1].bad.append((25 * BS, BS))
    assert vol.read(0, 25) == bytes(25 * BS)
    with pytest.raises(UnrecoverableRead) as e:
        vol.read(0, 100)
    assert e.value.lba == 25


def test_write_error_without_callback_raises() -> None:
    vol, ms = make(RaidLevel.RAID5, 3, 100)
    ms[1].fail_writes = True
    with pytest.raises(DriveError):
        vol.write(0, bytes(100 * BS))


def test_write_error_with_callback_carries_on_degraded() -> None:
    seen: list[int] = []

    def on_error(i: int, e: DriveError) -> None:
        seen.append(i)
        ms[i].fail_writes = False
        ms[i].state = FAILED

    vol, ms = make(RaidLevel.ADG, 5, 400, on_member_error=on_error)
    ms[2].fail_writes = True
    d = random.randbytes(400 * BS)
    vol.write(0, d)
    assert seen == [2] and vol.state() == "degraded" and vol.fault_tolerance() == 1
    assert vol.read(0, 400) == d
    ms[4].fail_writes = True
    ms[0].fail_writes = True
    with pytest.raises(VolumeFailed):
        vol.write(0, d)


def test_write_chooses_the_cheaper_of_rmw_and_reconstruct_write() -> None:
    vol, ms = make(RaidLevel.RAID5, 6, 2000)
    stripe_blocks = 5 * SU // BS

    def reads() -> int:
        return sum(m.reads for m in ms)

    vol.write(0, bytes(stripe_blocks * BS))  # full stripe: no reads at all
    assert reads() == 0
    vol.write(stripe_blocks + 3, bytes(BS))  # one block: read old data and old P
    assert reads() == 2
    before = reads()
    vol.write(2 * stripe_blocks, bytes(4 * SU))  # 4 of 5 chunks: read the fifth only
    assert reads() - before == 1


def test_state_and_fault_tolerance() -> None:
    vol, ms = make(RaidLevel.RAID10, 6, 100)
    assert (vol.state(), vol.fault_tolerance()) == ("ok", 1)
    fail(ms[0])
    fail(ms[4])  # different pairs: still alive
    assert (vol.state(), vol.fault_tolerance()) == ("degraded", 0)
    ms[3].state = REBUILDING  # the partner of 0 is not a full copy
    assert vol.state() == "failed"
    vol, ms = make(RaidLevel.ADG, 4, 100)
    ms[1].state = REBUILDING
    assert (vol.state(), vol.fault_tolerance()) == ("degraded", 1)
    vol.flush()
    fail(ms[2])
    vol.flush()
    assert ms[2].flushes == 1 and ms[1].flushes == 2 and ms[0].flushes == 2


def test_resync_recomputes_parity_over_stale_contents() -> None:
    vol, ms = make(RaidLevel.ADG, 6, 500)
    for m in ms:
        m.buf[:] = random.randbytes(len(m.buf))
    vol.resync_region(0, vol.per_member_bytes)
    d = bytes(vol.read(0, 500))
    check_layout(vol, ms, d)
    fail(ms[0])
    fail(ms[5])
    assert vol.read(0, 500) == d


@pytest.mark.parametrize(("level", "old_n", "new_n"), [(RaidLevel.RAID0, 2, 3), (RaidLevel.RAID5, 3, 4),
                                                       (RaidLevel.RAID5, 3, 6), (RaidLevel.ADG, 4, 5),
                                                       (RaidLevel.RAID10, 4, 6)])
def test_restripe_onto_added_members(level: RaidLevel, old_n: int, new_n: int) -> None:
    """Expansion with a watermark: host I/O during the move lands on the right layout."""
    blocks = 1500
    old, ms = make(level, old_n, blocks, base=SU)
    d = bytearray(random.randbytes(blocks * BS))
    old.write(0, d)
    ms += [FakeMember(bytearray(random.randbytes(len(ms[0].buf)))) for _ in range(new_n - old_n)]
    new = RaidVolume(level, ms, SU, blocks, BS, base_offset=SU)  # type: ignore[arg-type]
    assert new.per_member_bytes <= old.per_member_bytes
    mark = 0
    while mark < blocks:
        mark = restripe(old, new, mark, 100)
        lba = random.randrange(blocks - 10)  # a host write, split at the watermark
        buf = random.randbytes(10 * BS)
        d[lba * BS:(lba + 10) * BS] = buf
        lo = max(0, min(10, mark - lba))
        if lo:
            new.write(lba, buf[:lo * BS])
        if lo < 10:
            old.write(lba + lo, buf[lo * BS:])
    assert new.read(0, blocks) == d
    check_layout(new, ms, bytes(d))
    if level is not RaidLevel.RAID0:
        fail(ms[-1])
        assert new.read(0, blocks) == d


def test_restripe_refuses_to_overwrite_unmoved_data() -> None:
    old, ms = make(RaidLevel.RAID5, 4, 1000)
    new = RaidVolume(RaidLevel.ADG, ms, SU, 1000, BS)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        restripe(old, new, 0, 100)


def test_read_around_an_error_that_only_the_row_hull_touches() -> None:
    """Two lost data chunks are solved per block when a P error sits between the wanted ranges."""
    vol, ms = make(RaidLevel.ADG, 4, 200)  # stripe 0: Q on 0, data on 1 and 2, P on 3
    d = random.randbytes(200 * BS)
    vol.write(0, d)
    fail(ms[1])
    fail(ms[2])
    ms[3].bad.append((10 * BS, 4 * BS))  # P blocks 10-13: not needed for data blocks 20-31, 32-39
    assert vol.read(20, 20) == d[20 * BS:40 * BS]
    with pytest.raises(UnrecoverableRead) as e:
        vol.read(0, 40)
    assert e.value.lba == 10


def test_write_that_cannot_learn_the_old_row_settles_it_and_reports_the_lost_block() -> None:
    """Degraded RAID 5, the untouched chunk of the row unreadable too: the write succeeds, that
    chunk's block is reported lost (and settled as zeros, remapping its media error), and every
    block that was reconstructible still reads back, the new one included."""
    lost: list[tuple[int, int]] = []
    vol, ms = make(RaidLevel.RAID5, 3, 100, on_lost=lambda lba, n: lost.append((lba, n)))
    for m in ms:
        m.remap = True
    d = random.randbytes(100 * BS)
    vol.write(0, d)  # stripe 0: P on 2, data 0 on 0, data 1 on 1
    fail(ms[0])
    ms[1].bad.append((0, BS))
    vol.write(0, b"x" * BS)  # new P needs data 1's old block 0, which nothing can give
    assert lost == [(32, 1)]
    assert vol.read(0, 1) == b"x" * BS  # on the failed member: from parity over the settled row
    assert vol.read(1, 31) == d[BS:32 * BS]
    assert vol.read(33, 67) == d[33 * BS:]
    assert vol.read(32, 1) == bytes(BS)  # settled: the owner must answer MEDIUM ERROR for it


def test_rebuild_carries_on_past_a_block_it_cannot_rebuild() -> None:
    """The bug of issue 10: rebuild stopped at the first lost row and left the rest unrebuilt."""
    lost: list[tuple[int, int]] = []
    vol, ms = make(RaidLevel.RAID5, 3, 100, on_lost=lambda lba, n: lost.append((lba, n)))
    d = random.randbytes(100 * BS)
    vol.write(0, d)  # stripe 0: P on 2, data 0 on 0, data 1 on 1
    ms[0] = FakeMember(bytearray(random.randbytes(len(ms[0].buf))), REBUILDING, 0)
    ms[1].bad.append((7 * BS, BS))
    assert vol.rebuild_region(0, 0, vol.per_member_bytes) == 2
    assert lost == [(7, 1), (39, 1)]  # data 0 and data 1 of row 7: two unknowns, one parity
    ms[0].state = OK
    ms[1].bad.clear()
    good = [b for b in range(100) if b not in (7, 39)]
    for b in good:
        assert vol.read(b, 1) == d[b * BS:(b + 1) * BS], b
    # the row was settled: its parity agrees with what the members hold
    check_row = [bytes(ms[i].buf[7 * BS:8 * BS]) for i in (0, 1)]
    assert check_row == [bytes(BS), bytes(BS)]
    assert ms[2].buf[7 * BS:8 * BS] == parity.xor_blocks(check_row)


def test_a_read_names_every_lost_block_and_fails_at_the_first() -> None:
    lost: list[tuple[int, int]] = []
    vol, ms = make(RaidLevel.RAID1, 2, 100, on_lost=lambda lba, n: lost.append((lba, n)))
    vol.write(0, bytes(100 * BS))
    ms[0].bad.append((10 * BS, 5 * BS))
    ms[1].bad.extend([(12 * BS, 2 * BS), (20 * BS, BS)])
    ms[0].bad.append((20 * BS, BS))
    with pytest.raises(UnrecoverableRead) as e:
        vol.read(0, 100)
    assert e.value.lba == 12
    assert lost == [(12, 2), (20, 1)]


def test_resync_copies_mirrors_from_the_primary() -> None:
    vol, ms = make(RaidLevel.RAID10, 4, 300)
    d = random.randbytes(300 * BS)
    vol.write(0, d)
    ms[2].buf[:] = random.randbytes(len(ms[2].buf))
    vol.resync_region(0, vol.per_member_bytes)
    check_layout(vol, ms, d)


def test_raid0_cannot_rebuild_and_fails_with_one_member() -> None:
    vol, ms = make(RaidLevel.RAID0, 3, 300)
    with pytest.raises(VolumeFailed):
        vol.rebuild_region(0, 0, SU)
    fail(ms[1])
    with pytest.raises(VolumeFailed):
        vol.read(0, 1)
