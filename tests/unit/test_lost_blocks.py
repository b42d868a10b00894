"""Lost is lost, and said so: blocks a rebuild or degraded read cannot reconstruct are recorded
per logical drive, answer MEDIUM ERROR 03/11/00 with their LBA, survive restarts, and heal when
written; every block that was reconstructible reads back exactly (issue 10, item 1)."""

from __future__ import annotations

import struct
from pathlib import Path

from firmware_model.controller import ArraySpec, Controller, LogicalDriveSpec
from firmware_model.lost_blocks import MAX_RANGES, LostBlocks

from .shelf_helpers import MIB, Clocked, execute, info, run_idle, sense, small_spec, write

CHUNK = 128  # blocks per read-back


def read(c: Controller, lun: int, lba: int, n: int):  # type: ignore[no-untyped-def]
    return execute(c, lun, struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0))


def raid5_with_spare(tmp_path: Path) -> tuple[Clocked, Controller, bytes, int]:
    """The issue's shelf in small: RAID 5 on bays 8-10, spare 11, the whole unit written."""
    k = Clocked()
    spec = small_spec([ArraySpec("C", [8, 9, 10], [11])], [LogicalDriveSpec(3, "C", "5", 32 * MIB, "logs", 64)])
    c = k.open(tmp_path, spec)
    pat = bytes([0xAB]) * (CHUNK * 512)
    nblk = 32 * MIB // 512
    for lba in range(0, nblk, CHUNK):
        assert write(c, 3, lba, pat).status == 0
    c.flush()
    run_idle(c, k.clock)
    return k, c, pat, nblk


def sweep(c: Controller, lun: int, nblk: int, pat: bytes) -> tuple[list[int], list[int]]:
    """(chunks read back wrong with GOOD status, LBAs that answered MEDIUM ERROR block by block)."""
    c.cache.drop_clean()  # read the drives, not the read cache
    wrong, errors = [], []
    for lba in range(0, nblk, CHUNK):
        r = read(c, lun, lba, CHUNK)
        if r.status == 0:
            if r.data != pat:
                wrong.append(lba)
            continue
        assert sense(r) == (3, 0x11, 0), sense(r)
        for b in range(lba, lba + CHUNK):
            rb = read(c, lun, b, 1)
            if rb.status == 0:
                assert rb.data == pat[:512], f"block {b} wrong with GOOD"
            else:
                assert sense(rb) == (3, 0x11, 0) and info(rb) == b
                errors.append(b)
    return wrong, errors


def test_rebuild_over_a_media_error_loses_only_that_row_and_says_so(tmp_path: Path) -> None:
    k, c, pat, nblk = raid5_with_spare(tmp_path)
    c.fault_disk(8, "media-error", lba=4096, count=64)  # member bytes 2 MiB .. +32 KiB: stripe 32
    c.fault_disk(10, "fail")
    run_idle(c, k.clock)
    unit = next(u for u in c.units() if u["lun"] == 3)
    assert unit["state"] == "ok"
    wrong, errors = sweep(c, 3, nblk, pat)
    assert wrong == []
    # stripe 32 starts at LBA 32 * 256; bay 8's chunk there is data index 1 (bay 10's was parity)
    assert errors == list(range(8320, 8384))
    assert unit["lost_blocks"] == 64
    lost_ev = [e for e in c.events() if e["code"] == "BLOCKS_LOST"]
    assert len(lost_ev) == 1 and "LBA 8320-8383 (64 blocks)" in lost_ev[0]["message"]


def test_lost_blocks_survive_a_restart_and_heal_when_written(tmp_path: Path) -> None:
    k, c, pat, nblk = raid5_with_spare(tmp_path)
    c.fault_disk(8, "media-error", lba=4096, count=64)
    c.fault_disk(10, "fail")
    run_idle(c, k.clock)
    c.close()
    c = k.open(tmp_path)
    r = read(c, 3, 8300, 100)
    assert r.status != 0 and sense(r) == (3, 0x11, 0) and info(r) == 8320
    assert write(c, 3, 8320, b"\x11" * 512 * 10).status == 0  # heals 8320-8329 only
    c.flush()
    c.cache.drop_clean()
    assert read(c, 3, 8320, 10).data == b"\x11" * 512 * 10
    r = read(c, 3, 8320, 11)
    assert info(r) == 8330
    assert next(u for u in c.units() if u["lun"] == 3)["lost_blocks"] == 54
    assert any(e["code"] == "BLOCKS_HEALED" for e in c.events())
    c.close()
    c = k.open(tmp_path)
    assert next(u for u in c.units() if u["lun"] == 3)["lost_blocks"] == 54
    assert write(c, 3, 8256, pat).status == 0  # 8256-8383: the rest healed
    c.flush()
    wrong, errors = sweep(c, 3, nblk, pat)
    assert wrong == [] and errors == []


def test_a_degraded_read_records_what_it_could_not_reconstruct(tmp_path: Path) -> None:
    k = Clocked()
    c = k.open(tmp_path)  # RAID 1 on bays 1-2 (LUN 1), spare 7
    c.delete_spare(1, [7])
    data = bytes(range(256)) * 2 * 64
    assert write(c, 1, 0, data).status == 0
    c.flush()
    c.cache.drop_clean()
    c.fault_disk(1, "fail")
    c.fault_disk(2, "media-error", lba=10, count=3)
    r = read(c, 1, 0, 64)
    assert sense(r) == (3, 0x11, 0) and info(r) == 10
    c.fault_disk(2, "clear")  # the fault went, but what was lost stays lost until written
    assert info(read(c, 1, 0, 64)) == 10
    assert read(c, 1, 0, 10).data == data[: 10 * 512]
    assert read(c, 1, 13, 51).data == data[13 * 512 :]
    assert next(u for u in c.units() if u["lun"] == 1)["lost_blocks"] == 3


def test_a_cached_write_over_a_lost_block_reads_back_before_it_is_destaged(tmp_path: Path) -> None:
    k, c, pat, _nblk = raid5_with_spare(tmp_path)
    c.fault_disk(8, "media-error", lba=4096, count=64)
    c.fault_disk(10, "fail")
    run_idle(c, k.clock)
    c.cache.drop_clean()
    assert write(c, 3, 8320, b"\x22" * 512).status == 0  # in the write-back cache, not yet on the drives
    r = read(c, 3, 8192, 129)  # uncached blocks around it, the new block, nothing lost before 8321
    assert r.status == 0 and r.data[128 * 512 :] == b"\x22" * 512 and r.data[: 128 * 512] == pat


def test_lost_block_ranges_stay_bounded_and_never_forget_a_block() -> None:
    ranges: list[list[int]] = []
    lb = LostBlocks(ranges)
    for i in range(MAX_RANGES + 50):
        lb.add(i * 10, 1)
    assert len(ranges) == MAX_RANGES
    assert all(lb.first_in(i * 10, 1) == i * 10 for i in range(MAX_RANGES + 50))
    assert lb.heal(0, 5) >= 1 and lb.first_in(0, 5) is None and lb.first_in(10, 1) == 10
