"""Data-path bugs found by the reference-model checker (tests/model), each as a plain, minimal test.

Every test here writes known data, does the few steps the checker's shrunk sequence needed,
and reads back: a wrong block with GOOD status is the failure. A kill -9 is simulated as the
checker does it: the Controller is abandoned without close() (descriptors closed, cache
unmapped, nothing written or flushed), and "killed in the middle of an operation" means the
member write number N+1 (firmware_model.enclosure.Drive.write) raises a BaseException that
nothing in the firmware catches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_model.cache import CacheSettings
from firmware_model.controller import ArraySpec, Controller, LogicalDriveSpec, ShelfSpec
from firmware_model.scsi.types import Status
from tests.unit.shelf_helpers import (
    MIB,
    Clocked,
    KillNow,
    abandon,
    dies_at_member_write,
    pattern,
    read,
    run_idle,
    sense,
    write,
)


def shelf(level: str, members: int, lds_kib: list[int], stripe_kib: int = 16, drives: int | None = None,
          spares: list[int] | None = None, cache: bool = True) -> ShelfSpec:
    n = drives if drives is not None else members + 2
    return ShelfSpec(
        serial="REGRESS001",
        drive_bytes=[20 * MIB if b <= n else 0 for b in range(1, 15)],
        arrays=[ArraySpec("A", list(range(1, members + 1)), spares or [])],
        logical_drives=[LogicalDriveSpec(i + 1, "A", level, kib * 1024, f"ld{i + 1}", stripe_kib)
                        for i, kib in enumerate(lds_kib)],
        cache=CacheSettings(size_mb=1, holdup_s=30, charge_s=5, spinup_s=0, enabled=cache),
    )


def first_wrong(c: Controller, lun: int, expect: bytes) -> int | None:
    """The first block that reads differently from `expect` (asserting GOOD status)."""
    blocks = len(expect) // 512
    for lba in range(0, blocks, 256):
        n = min(256, blocks - lba)
        res = read(c, lun, lba, n)
        assert res.status == Status.GOOD, (lba, sense(res))
        want = expect[lba * 512 : (lba + n) * 512]
        if res.data != want:
            for i in range(n):
                if res.data[i * 512 : (i + 1) * 512] != want[i * 512 : (i + 1) * 512]:
                    return lba + i
    return None


@pytest.fixture
def env() -> Clocked:
    return Clocked()


# ------------------------------------------------------------------ expansion journal replay
def test_expansion_step_killed_and_replayed_moves_every_block(env: Clocked, tmp_path: Path) -> None:
    """RAID 5 over 3 drives, a 2 MiB unit (4096 blocks, not a multiple of the new 3 x 16 KiB
    stripe), expanded onto a 4th drive; the emulator dies at the first member write of the
    first expansion step. After the restart the journal replay must leave every block in place."""
    spec = shelf("5", 3, [2048, 2048], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(1, 4096 * 512)
    for lba in range(0, 4096, 512):
        assert write(c, 1, lba, data[lba * 512 : (lba + 512) * 512]).status == Status.GOOD
    c.expand_unit(1, [4])
    with dies_at_member_write(0), pytest.raises(KillNow):
        run_idle(c, env.clock)
    abandon(c)
    c = env.open(tmp_path, spec)
    assert first_wrong(c, 1, data) is None
    run_idle(c, env.clock)
    assert first_wrong(c, 1, data) is None


# ------------------------------------------------------------------ extend after an expansion
def test_extend_after_expansion_reads_zeros_in_the_new_blocks(env: Clocked, tmp_path: Path) -> None:
    """RAID 1+0 over 4 drives, 256 KiB stripe, a 4 MiB unit written full, expanded onto 2 more
    drives (3 data chunks per stripe: the last stripe is only a third used), then extended by
    512 KiB, which fits in that last stripe. The new blocks must read as zeros."""
    spec = shelf("10", 4, [4096], stripe_kib=256, cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(2, 8192 * 512)
    for lba in range(0, 8192, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.expand_unit(1, [5, 6])
    run_idle(c, env.clock)
    assert first_wrong(c, 1, data) is None
    c.extend_unit(1, 8192 * 512 + 512 * 1024)
    assert first_wrong(c, 1, data + bytes(512 * 1024)) is None


# ------------------------------------------------------------------ RAID 0 expansion losing a new drive
def test_raid0_expansion_losing_an_added_drive_is_an_answer_not_an_exception(env: Clocked, tmp_path: Path) -> None:
    """RAID 0 over 2 drives expanded onto bays 3-4; bay 3 is pulled before the first step.
    Background work must not raise, and every read answers the data or an error."""
    spec = shelf("0", 2, [2048], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(3, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.expand_unit(1, [3, 4])
    c.fault_disk(3, "pull")
    run_idle(c, env.clock)  # raised VolumeFailed out of advance()
    for lba in range(0, 4096, 256):
        res = read(c, 1, lba, 256)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 256) * 512], lba


# ------------------------------------------------------------------ the known symptoms
def test_raid1_copy_back_keeps_the_spare_until_the_new_drive_is_whole(env: Clocked, tmp_path: Path) -> None:
    """Issue 10 (2): RAID 1 with a spare. The spare takes over bay 1, bay 2 fails, then the
    failed drive of bay 1 is pulled and a new one inserted: the copy-back must not release the
    spare (the only current copy) before the new drive holds the data; the unit stays up."""
    spec = shelf("1", 2, [2048], spares=[3], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(4, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(1, "fail")
    run_idle(c, env.clock)  # the spare (bay 3) now holds slot 1's copy
    c.fault_disk(2, "fail")
    c.fault_disk(1, "pull")
    c.fault_disk(1, "insert", new=True)
    assert next(u for u in c.units() if u["lun"] == 1)["state"] != "failed"
    assert first_wrong(c, 1, data) is None
    run_idle(c, env.clock)
    assert first_wrong(c, 1, data) is None


def test_raid5_rebuild_over_a_media_error_loses_only_that_row(env: Clocked, tmp_path: Path) -> None:
    """Issue 10 (1): RAID 5 rebuild onto a spare while a surviving member has a media error:
    the blocks of the row that cannot be rebuilt may answer MEDIUM ERROR, every other block
    must read back its data (it read back zeros with GOOD status for the rest of the chunk)."""
    spec = shelf("5", 4, [4096], spares=[5], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(5, 8192 * 512)
    for lba in range(0, 8192, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(2, "media-error", lba=300, count=1)  # member byte 153600: row 300 of stripe 9
    c.fault_disk(1, "fail")
    run_idle(c, env.clock)
    su = 32  # 16 KiB stripe unit in blocks
    k = 3
    s, a = divmod(300, su)
    lost_row = {s * k * su + j * su + a for j in range(k)}
    for lba in range(0, 8192, 64):
        res = read(c, 1, lba, 64)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 64) * 512], lba
            continue
        for b in range(lba, lba + 64):  # block by block: only the lost row may error
            r = read(c, 1, b, 1)
            if r.status == Status.GOOD:
                assert r.data == data[b * 512 : (b + 1) * 512], b
            else:
                assert b in lost_row, (b, sense(r))


# ------------------------------------------------------------------ degraded write settles too much
def test_degraded_write_next_to_a_media_error_loses_only_the_unreadable_blocks(env: Clocked, tmp_path: Path) -> None:
    """RAID 5 over 4 drives, 16 KiB stripe unit. In stripe 1, data chunk 1 (LBA 128-159) is on
    bay 1 and chunk 2 (LBA 160-191) on bay 2. Bay 1 gets a media error under LBA 136-139 only;
    bay 2 is pulled; the host rewrites LBA 160-191, which needs chunk 1 to update the parity.
    Only LBA 136-139 cannot be reconstructed; LBA 128-135 and 140-159 must read back their data
    (they were zeroed and answered MEDIUM ERROR: 32 blocks lost instead of 4)."""
    spec = shelf("5", 4, [2048], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(6, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(1, "media-error", lba=40, count=4)  # member rows 40-43: chunk 1 of stripe 1
    c.fault_disk(2, "pull")
    new = pattern(7, 32 * 512)
    write(c, 1, 160, new)
    for lba in [*range(128, 136), *range(140, 160)]:
        res = read(c, 1, lba, 1)
        assert res.status == Status.GOOD, (lba, sense(res))
        assert res.data == data[lba * 512 : (lba + 1) * 512], lba


# ------------------------------------------------------------------ a failed redundant unit re-enabled
def test_a_failed_raid5_unit_is_not_re_enabled_with_a_spare_that_was_never_rebuilt(env: Clocked,
                                                                                   tmp_path: Path) -> None:
    """RAID 5 over 3 drives with a spare (bay 4). Bay 1 fails (the spare takes over), bay 2 is
    pulled before the rebuild: the unit fails. The background work then passes over the failed
    unit, marking the spare rebuilt. Bay 2 put back: the unit must not come back serving the
    spare's zeros as data (it must stay failed, or come back with the data)."""
    spec = shelf("5", 3, [2048], spares=[4], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(8, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(1, "fail")
    c.fault_disk(2, "pull")
    assert next(u for u in c.units() if u["lun"] == 1)["state"] == "failed"
    run_idle(c, env.clock)
    c.fault_disk(2, "insert")
    for lba in range(0, 4096, 256):
        res = read(c, 1, lba, 256)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 256) * 512], f"LBA {lba}: wrong data with GOOD"


# ------------------------------------------------------------------ write-intent recovery resyncs whole stripes
def test_recovery_of_an_interrupted_write_loses_nothing_outside_its_rows(env: Clocked, tmp_path: Path) -> None:
    """RAID 5 over 4 drives, 16 KiB stripe unit: stripe 0 holds LBA 0-31 on bay 1, 32-63 on bay 2,
    64-95 on bay 3, parity on bay 4. Bay 2 has a media error under LBA 52-55 (rows 20-23). A write
    of LBA 0-7 (rows 0-7) dies after its data write, before the parity. After the restart the
    recovery may settle rows 0-7; rows 20-23 were consistent: LBA 52-55 must read back from parity."""
    spec = shelf("5", 4, [2048], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(9, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(2, "media-error", lba=20, count=4)
    with dies_at_member_write(1), pytest.raises(KillNow):
        write(c, 1, 0, pattern(10, 8 * 512))
    abandon(c)
    c = env.open(tmp_path, spec)
    for lba in range(52, 56):
        res = read(c, 1, lba, 1)
        assert res.status == Status.GOOD, (lba, sense(res))
        assert res.data == data[lba * 512 : (lba + 1) * 512], lba


def test_a_failed_raid0_unit_does_not_come_back_on_a_blank_replacement(env: Clocked, tmp_path: Path) -> None:
    """RAID 0 over 2 drives. Bay 1 fails: the unit fails. A new drive goes into bay 1 (it takes
    the slot; RAID 0 has nothing to rebuild it from). That drive is pulled and put back: the
    unit must not come back serving the blank drive's zeros as data."""
    spec = shelf("0", 2, [2048], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(11, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(1, "fail")
    c.fault_disk(1, "insert", new=True)
    run_idle(c, env.clock)
    c.fault_disk(1, "pull")
    c.fault_disk(1, "insert")
    for lba in range(0, 4096, 256):
        res = read(c, 1, lba, 256)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 256) * 512], f"LBA {lba}: wrong data with GOOD"


def test_raid0_expansion_over_a_media_error_records_the_block_it_could_not_move(env: Clocked,
                                                                                tmp_path: Path) -> None:
    """Found by scripts/check-model: RAID 0 over 2 drives expanded onto a third while a member
    has a media error under written data. The expansion cannot read that block: the new layout
    holds zeros there, so it must answer MEDIUM ERROR (it read zeros with GOOD status)."""
    spec = shelf("0", 2, [2048], stripe_kib=256, cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(12, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(2, "media-error", lba=517, count=1)  # member 1, stripe 1, 5 blocks in: LBA 2 * 512 + 512 + 5
    c.expand_unit(1, [3])
    run_idle(c, env.clock)
    c.fault_disk(2, "clear")
    for lba in range(0, 4096, 64):
        res = read(c, 1, lba, 64)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 64) * 512], lba
            continue
        assert sense(res) == (3, 0x11, 0)
        for b in range(lba, lba + 64):
            r = read(c, 1, b, 1)
            if r.status == Status.GOOD:
                assert r.data == data[b * 512 : (b + 1) * 512], b
            else:
                assert b == 1541, b
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 1


def test_a_write_killed_before_it_touched_a_drive_loses_nothing(env: Clocked, tmp_path: Path) -> None:
    """Found by scripts/check-model: ADG over 4 drives, a media error under member row 16384 of
    bay 1, a one-block write to that row killed before its first member write. The row was never
    touched, so recovery must leave it alone (it recorded bay 1's block as lost: the write-intent
    log did not say how far the write had got)."""
    spec = shelf("ADG", 4, [4096], cache=False)
    c = env.open(tmp_path, spec)
    c.fault_disk(1, "media-error", lba=0, count=33)
    with dies_at_member_write(0), pytest.raises(KillNow):
        write(c, 1, 64, pattern(13, 512))
    abandon(c)
    c = env.open(tmp_path, spec)
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 0
    res = read(c, 1, 64, 1)
    assert res.status == Status.GOOD and res.data == bytes(512)


def test_recovery_resyncs_only_the_row_a_multi_row_write_was_in(env: Clocked, tmp_path: Path) -> None:
    """RAID 5 over 4 drives, 16 KiB stripe: a 96 KiB write (two whole stripes) killed in its
    second stripe, with a media error in the first stripe's rows on a member it wrote first.
    The first stripe was written whole (consistent): nothing there may be lost."""
    spec = shelf("5", 4, [4096], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(14, 8192 * 512)
    for lba in range(0, 8192, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    new = pattern(15, 192 * 512)
    with dies_at_member_write(5), pytest.raises(KillNow):  # stripe 0: 3 data + P done; dies in stripe 1
        write(c, 1, 0, new)
    abandon(c)
    c = env.open(tmp_path, spec)
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 0
    got = read(c, 1, 0, 96)
    assert got.status == Status.GOOD and got.data == new[: 96 * 512]  # stripe 0 landed whole
    for bay in range(1, 5):  # and its parity agrees: any member gone, stripe 0 reads the same
        c.cache.drop_clean()
        c.fault_disk(bay, "pull")
        assert read(c, 1, 0, 96).data == new[: 96 * 512], bay
        c.fault_disk(bay, "insert")
        run_idle(c, env.clock)


def test_a_media_error_remapped_by_a_write_stays_remapped_after_a_kill(env: Clocked, tmp_path: Path) -> None:
    """Found by scripts/check-model: a write over a media error remaps it (the drive reallocates
    the blocks), but only in memory; killed before the write finished, the restart brought the
    error back from NVRAM over the freshly written blocks, and the recovery of the torn row then
    lost them. ADG over 4 drives expanded onto 2 more; bay 1's error under stripe 19."""
    spec = shelf("ADG", 4, [4096], cache=False, drives=7)
    c = env.open(tmp_path, spec)
    c.expand_unit(1, [6, 7])
    run_idle(c, env.clock)
    c.fault_disk(1, "media-error", lba=361, count=256)
    with dies_at_member_write(4, torn=19), pytest.raises(KillNow):
        write(c, 1, 2400, pattern(16, 63 * 512))  # stripe 19's data 0 on bay 1, then P torn
    abandon(c)
    c = env.open(tmp_path, spec)
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 0
    res = read(c, 1, 2432, 31)
    assert res.status == Status.GOOD


@pytest.mark.parametrize("kill_after", range(0, 6))
def test_a_kill_inside_a_rebuild_settle_keeps_the_lost_marks(env: Clocked, tmp_path: Path, kill_after: int) -> None:
    """A rebuild that settles an unrecoverable row writes zeros over the survivor's bad block
    (remapping it, durably) and new parity. Killed between those writes, the restart must still
    know the blocks are lost: nothing of that row may read back wrong with GOOD status."""
    spec = shelf("5", 3, [2048], spares=[4], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(17, 4096 * 512)
    for lba in range(0, 4096, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.fault_disk(2, "media-error", lba=7, count=1)
    c.fault_disk(1, "fail")  # the spare (bay 4) rebuilds; member row 7 of bay 2 is unreadable
    try:
        with dies_at_member_write(kill_after):
            run_idle(c, env.clock)
        c.close()
    except KillNow:
        abandon(c)
    c = env.open(tmp_path, spec)
    run_idle(c, env.clock)
    for lba in range(0, 4096, 64):
        res = read(c, 1, lba, 64)
        if res.status == Status.GOOD:
            assert res.data == data[lba * 512 : (lba + 64) * 512], f"LBA {lba}: wrong data with GOOD"
            continue
        for b in range(lba, lba + 64):
            r = read(c, 1, b, 1)
            if r.status == Status.GOOD:
                assert r.data == data[b * 512 : (b + 1) * 512], f"LBA {b}: wrong data with GOOD"


def test_rebuild_progress_survives_a_kill(env: Clocked, tmp_path: Path) -> None:
    """Found by the checker: the rebuild watermark reached NVRAM only every 16 steps, so after a
    kill the rebuild redid rows it had finished; a media error injected on a survivor since then
    made those rows lost although the rebuilt drive held them. RAID 5 over 3 drives, spare 4."""
    spec = shelf("5", 3, [8192], spares=[4], cache=False)
    c = env.open(tmp_path, spec)
    data = pattern(18, 16384 * 512)
    for lba in range(0, 16384, 1024):
        assert write(c, 1, lba, data[lba * 512 : (lba + 1024) * 512]).status == Status.GOOD
    c.set_rebuild_priority("low")  # 1 MiB a step
    c.fault_disk(1, "fail")
    for _ in range(3):
        d = c.next_deadline()
        assert d is not None
        env.clock.advance(max(0.0, d - env.clock.now()))
        c.advance(env.clock.now())
    assert c.disks()[3]["rebuild_percent"] is not None
    abandon(c)
    c = env.open(tmp_path, spec)
    c.fault_disk(2, "media-error", lba=16, count=8)  # rows the rebuild had done before the kill
    run_idle(c, env.clock)
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 0
    assert first_wrong(c, 1, data) is None


def test_a_failed_expansion_step_leaves_no_journal_for_the_next_expansion(env: Clocked, tmp_path: Path) -> None:
    """Found by scripts/check-model: RAID 0 expanded onto bay 4, which fails; the first step
    fails and the expansion is called off, but its step journal stayed on disk. A second
    expansion, a write, a restart: the stale journal was replayed into the new layout and the
    written block read back as zeros with GOOD status."""
    spec = shelf("0", 2, [4096], cache=False, drives=5)
    c = env.open(tmp_path, spec)
    c.expand_unit(1, [4])
    c.fault_disk(4, "fail")
    run_idle(c, env.clock)  # the step fails: called off
    assert not (tmp_path / "expand-journal.bin").exists()
    c.expand_unit(1, [5])
    new = pattern(19, 512)
    assert write(c, 1, 0, new).status == Status.GOOD
    abandon(c)
    c = env.open(tmp_path, spec)
    res = read(c, 1, 0, 1)
    assert res.status == Status.GOOD and res.data == new
    run_idle(c, env.clock)
    assert read(c, 1, 0, 1).data == new
