"""The RAID 5/ADG write hole is closed (issue 10, item 3): a kill in the middle of a write (host
write-through, or a destage of the write-back cache) must not leave parity that disagrees with
the data, so a drive failure afterwards still reconstructs every acknowledged block."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from firmware_model.controller import ArraySpec, Controller, LogicalDriveSpec

from .shelf_helpers import MIB, Clocked, KillNow, abandon, dies_at_member_write, execute, run_idle, small_spec, write

LEVELS = [("5", [3, 4, 5, 6]), ("ADG", [3, 4, 5, 6, 8]), ("1", [3, 4]), ("10", [3, 4, 5, 6])]


def read(c: Controller, lba: int, n: int) -> bytes:
    r = execute(c, 2, struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0))
    assert r.status == 0, r
    return r.data


def shelf(tmp_path: Path, level: str, bays: list[int]) -> tuple[Clocked, Controller, bytes]:
    k = Clocked()
    spec = small_spec([ArraySpec("A", [1, 2]), ArraySpec("B", bays)],
                      [LogicalDriveSpec(1, "A", "1", 4 * MIB, "boot"),
                       LogicalDriveSpec(2, "B", level, 4 * MIB, "data", 16)])
    c = k.open(tmp_path, spec)
    old = bytes(range(256)) * 2 * 256  # 128 KiB: whole rows
    assert write(c, 2, 0, old).status == 0
    c.flush()
    run_idle(c, k.clock)
    return k, c, old


@pytest.mark.parametrize(("level", "bays"), LEVELS)
@pytest.mark.parametrize("cached", [False, True])
def test_a_kill_between_data_and_parity_then_a_drive_failure_loses_nothing(
        tmp_path: Path, level: str, bays: list[int], cached: bool) -> None:
    for kill_after in range(1, 8):
        state = tmp_path / f"k{kill_after}"
        k, c, old = shelf(state, level, bays)
        if not cached:
            c.set_cache(enabled=False)
        new = b"\xee" * 512
        try:
            with dies_at_member_write(kill_after):
                # one block of stripe 0: a data member, then P (and Q); die in between
                assert write(c, 2, 5, new).status == 0
                c.flush()  # with the write-back cache, the destage dies instead
        except KillNow:
            pass
        else:
            assert kill_after > 1
            c.close()
            break  # the write needs no more member writes than this
        abandon(c)
        c = k.open(state)
        run_idle(c, k.clock)
        assert any(e["code"] == "WRITES_RECOVERED" for e in c.events()) or cached
        got5 = read(c, 5, 1)
        assert got5 in (old[5 * 512:6 * 512], new)  # unacknowledged (or acknowledged and replayed)
        if cached:
            assert got5 == new  # acknowledged in the battery-backed cache: it survives
        expect = old[: 5 * 512] + got5 + old[6 * 512:]
        for bay in bays:  # any single member gone: every block still reads as before
            c.cache.drop_clean()
            c.fault_disk(bay, "pull")
            assert read(c, 0, 256) == expect, f"{level}: wrong data with bay {bay} pulled"
            c.fault_disk(bay, "insert")
            run_idle(c, k.clock)
        c.close()


def test_a_kill_during_a_degraded_write_replays_the_journal(tmp_path: Path) -> None:
    """Degraded RAID 5: the parity is the only trace of the failed member's data, so the member
    writes are journalled first; a kill between them is repaired by applying the journal again."""
    k, c, old = shelf(tmp_path, "5", [3, 4, 5, 6])
    c.set_cache(enabled=False)
    c.fault_disk(6, "fail")  # member 3
    lay = c.lds[2].volume.layout
    s = next(s for s in range(8) if lay.roles(s).p != 3 and 3 in [h[0] for h in lay.roles(s).data])
    j = next(j for j, h in enumerate(lay.roles(s).data) if h[0] != 3)
    lba = lay.logical_offset(s, j) // 512  # its row also holds data of the failed member
    new = b"\xdd" * 512
    with dies_at_member_write(1), pytest.raises(KillNow):
        write(c, 2, lba, new)
    abandon(c)
    c = k.open(tmp_path)
    assert next(u for u in c.units() if u["lun"] == 2)["lost_blocks"] == 0
    got = read(c, lba, 1)
    assert got == new  # the journal was complete: the write is applied whole
    c.cache.drop_clean()
    assert read(c, 0, 256) == old[: lba * 512] + new + old[(lba + 1) * 512:]
