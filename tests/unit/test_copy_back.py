"""Spares as on a Smart Array (issue 10, item 4): an activated spare stays in the array until a
drive inserted into the failed bay has been filled from it (copy-back); only then does it return
to standby. Fault tolerance never drops during copy-back, and a failed drive stays a failed
member of its array in SHOW DISKS."""

from __future__ import annotations

import struct
from pathlib import Path

from firmware_model.controller import Controller

from .shelf_helpers import MIB, Clocked, execute, run_idle, write

PAT = bytes(range(256)) * 256  # 64 KiB


def read(c: Controller, lun: int, lba: int, n: int):  # type: ignore[no-untyped-def]
    return execute(c, lun, struct.pack(">BBIBHB", 0x28, 0, lba, 0, n, 0))


def filled(tmp_path: Path) -> tuple[Clocked, Controller]:
    """The small default shelf: RAID 1 on bays 1-2 (LUN 1, 8 MiB), spare 7; LUN 1 written."""
    k = Clocked()
    c = k.open(tmp_path)
    for lba in range(0, 8 * MIB // 512, 128):
        assert write(c, 1, lba, PAT).status == 0
    c.flush()
    run_idle(c, k.clock)
    return k, c


def next_step(c: Controller, k: Clocked) -> None:
    """Move the virtual clock to the next background deadline and run what is due."""
    d = c.next_deadline()
    assert d is not None
    k.clock.advance(max(0.0, d - k.clock.now()))
    c.advance(k.clock.now())


def all_good(c: Controller, data: dict[int, bytes] | None = None) -> bool:
    c.cache.drop_clean()
    for lba in range(0, 8 * MIB // 512, 128):
        r = read(c, 1, lba, 128)
        if r.status != 0 or r.data != (data or {}).get(lba, PAT):
            return False
    return True


def disk(c: Controller, bay: int) -> dict:  # type: ignore[type-arg]
    return c.disks()[bay - 1]


def unit(c: Controller) -> dict:  # type: ignore[type-arg]
    return next(u for u in c.units() if u["lun"] == 1)


def test_the_issue_sequence_keeps_the_only_copy(tmp_path: Path) -> None:
    k, c = filled(tmp_path)
    c.fault_disk(1, "fail")
    run_idle(c, k.clock)  # the spare rebuilds; unit ok
    assert (disk(c, 1)["state"], disk(c, 1)["role"], disk(c, 1)["array"]) == ("failed", "member", "A")
    c.fault_disk(2, "fail")
    run_idle(c, k.clock)  # the spare alone holds the data
    assert unit(c)["state"] == "interim recovery" and all_good(c)
    c.fault_disk(1, "pull")
    c.fault_disk(1, "insert")  # a new drive: copy-back, not a release of the only copy
    codes = [e["code"] for e in c.events()]
    assert "COPY_BACK_STARTED" in codes and "UNIT_FAILED" not in codes
    assert disk(c, 7)["state"] == "ok" and disk(c, 7)["role"] == "member"  # still in the array
    assert disk(c, 1)["state"] == "rebuilding" and disk(c, 1)["role"] == "member"
    run_idle(c, k.clock)
    codes = [e["code"] for e in c.events()]
    assert codes.index("COPY_BACK_DONE") < codes.index("SPARE_RELEASED")
    assert "UNIT_FAILED" not in codes
    assert all_good(c)
    # the freed spare stood in for bay 2 in turn; all redundant again
    assert unit(c)["state"] == "ok" and unit(c)["fault_tolerance"] == 1


def test_fault_tolerance_never_drops_during_copy_back(tmp_path: Path) -> None:
    k, c = filled(tmp_path)
    c.fault_disk(1, "fail")
    run_idle(c, k.clock)
    c.fault_disk(1, "insert")  # replaces the failed drive in bay 1
    c.set_rebuild_priority("low")
    steps = 0
    data: dict[int, bytes] = {}
    while any(e["code"] == "COPY_BACK_DONE" for e in c.events()) is False:
        assert unit(c)["state"] == "ok" and unit(c)["fault_tolerance"] == 1
        lba = (steps * 997 * 128) % (8 * MIB // 512 - 128) // 128 * 128
        data[lba] = bytes([steps % 251 + 1]) * len(PAT)
        assert write(c, 1, lba, data[lba]).status == 0  # host writes during copy-back reach both
        c.flush()
        next_step(c, k)
        steps += 1
        assert steps < 1000
    assert steps > 2
    # the spare is back in standby: the replacement alone with bay 2 must hold everything
    assert disk(c, 7)["state"] == "spare"
    c.fault_disk(2, "fail")  # the replacement is now the only copy
    assert all_good(c, data)


def test_a_restart_during_copy_back_resumes_it(tmp_path: Path) -> None:
    k, c = filled(tmp_path)
    c.fault_disk(1, "fail")
    run_idle(c, k.clock)
    c.set_rebuild_priority("low")
    c.fault_disk(1, "insert")
    for _ in range(3):
        next_step(c, k)
    assert write(c, 1, 0, b"\x77" * len(PAT)).status == 0
    c.close()
    c = k.open(tmp_path)
    assert disk(c, 1)["state"] == "rebuilding" and disk(c, 7)["role"] == "member"
    assert write(c, 1, 128, b"\x78" * len(PAT)).status == 0  # after the restart: still mirrored
    c.flush()
    run_idle(c, k.clock)
    assert disk(c, 7)["state"] == "spare"
    c.fault_disk(2, "fail")
    assert all_good(c, {0: b"\x77" * len(PAT), 128: b"\x78" * len(PAT)})


def test_the_spare_failing_during_copy_back_turns_it_into_a_rebuild(tmp_path: Path) -> None:
    k, c = filled(tmp_path)
    c.fault_disk(1, "fail")
    run_idle(c, k.clock)
    c.set_rebuild_priority("low")
    c.fault_disk(1, "insert")
    next_step(c, k)
    c.fault_disk(7, "fail")
    assert unit(c)["state"] == "rebuilding"
    run_idle(c, k.clock)
    assert unit(c)["state"] == "ok" and all_good(c)
    c.fault_disk(2, "fail")
    assert all_good(c)
