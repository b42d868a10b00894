"""Growth: logical drive extension and array capacity expansion (restripe under host I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_model.controller import ArraySpec, Controller, ControllerError, LogicalDriveSpec
from firmware_model.raid.volume import RaidVolume
from firmware_model.scsi.types import ScsiRequest, Status
from tests.unit.shelf_helpers import (
    HOST,
    MIB,
    Clocked,
    codes,
    execute,
    fill,
    pattern,
    read_all,
    run_idle,
    sense,
    small_spec,
    unit,
    write,
)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


def read_capacity(c: Controller, lun: int) -> tuple[int, int]:
    res = execute(c, lun, bytes((0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0)))
    assert res.status == Status.GOOD
    return int.from_bytes(res.data[:4], "big"), int.from_bytes(res.data[4:8], "big")


def test_extend_grows_the_unit_keeps_data_and_signals_capacity_change(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    data = fill(c, 2, 5)
    assert read_capacity(c, 2) == (24 * MIB // 512 - 1, 512)
    c.extend_unit(2, 36 * MIB)
    res = c.target.execute(ScsiRequest(HOST, 2, bytes((0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0))))
    assert res.status == Status.CHECK_CONDITION and sense(res) == (0x6, 0x2A, 0x09)
    assert read_capacity(c, 2) == (36 * MIB // 512 - 1, 512)
    got = read_all(c, 2)
    assert got[: len(data)] == data and got[len(data) :] == bytes(12 * MIB)
    tail = pattern(9, 12 * MIB)
    assert write(c, 2, 24 * MIB // 512, tail[: 1 * MIB]).status == Status.GOOD
    c.fault_disk(6, "pull")  # parity of the new area is consistent: degraded reads are right
    got = read_all(c, 2)
    assert got[: len(data)] == data and got[len(data) : len(data) + MIB] == tail[:MIB]
    assert "UNIT_EXTENDED" in codes(c)
    with pytest.raises(ControllerError):
        c.extend_unit(2, 200 * MIB)


def test_extend_stops_at_the_next_unit(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2, 3])], lds=[
        LogicalDriveSpec(1, "A", "5", 8 * MIB, "one", 16), LogicalDriveSpec(2, "A", "5", 8 * MIB, "two", 16)]))
    with pytest.raises(ControllerError) as exc:
        c.extend_unit(1, 9 * MIB)
    assert "at most 8388608" in str(exc.value)
    c.extend_unit(2, 100 * MIB)


def test_expand_raid5_restripes_every_unit_while_hosts_write(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2, 3])], lds=[
        LogicalDriveSpec(1, "A", "5", 20 * MIB, "one", 16),
        LogicalDriveSpec(2, "A", "5", 12 * MIB, "two", 64)]))
    c.set_rebuild_priority("medium")
    d1 = bytearray(fill(c, 1, 1))
    d2 = bytearray(fill(c, 2, 2))
    free_before = unit(c, 2)["base_offset"]
    c.expand_unit(1, [4, 5])
    assert unit(c, 1)["state"] == "expanding" and unit(c, 1)["bays"] == [1, 2, 3, 4, 5]
    with pytest.raises(ControllerError):
        c.add_unit(3, raid="5", array="A")
    step = 0
    while (d := c.next_deadline()) is not None:
        env.clock.advance(max(0.0, d - env.clock.now()))
        c.advance(env.clock.now())
        step += 1
        if unit(c, 1)["state"] != "expanding":
            break  # (host writes would keep the write-back cache busy forever)
        # writes land on both sides of the watermark
        for lun, buf in ((1, d1), (2, d2)):
            lba = (step * 997) % (len(buf) // 512 - 16)
            new = pattern(step * 10 + lun, 16 * 512)
            assert write(c, lun, lba, new).status == Status.GOOD
            buf[lba * 512 : lba * 512 + len(new)] = new
        if step == 3:
            assert read_all(c, 1) == d1
            assert 0 < (unit(c, 1)["expand_percent"] or 0) < 100
        assert step < 500
    assert unit(c, 1)["state"] == "ok" and unit(c, 2)["state"] == "ok"
    assert read_all(c, 1) == d1 and read_all(c, 2) == d2
    # repacked: the second unit moved down, the freed space is at the end
    assert unit(c, 2)["base_offset"] < free_before
    ev = codes(c)
    assert "EXPAND_STARTED" in ev and "EXPAND_PROGRESS" in ev and "EXPAND_DONE" in ev
    c.fault_disk(2, "fail")
    assert read_all(c, 1) == d1 and read_all(c, 2) == d2
    c.add_unit(3, raid="5", array="A", stripe_kib=16)  # the new room is usable


def test_expand_raid1_becomes_raid10(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    data = fill(c, 1, 3)
    c.expand_unit(1, [8, 9])
    run_idle(c, env.clock)
    u = unit(c, 1)
    assert u["raid"] == "1+0" and u["bays"] == [1, 2, 8, 9] and u["state"] == "ok"
    assert read_all(c, 1) == data
    c.fault_disk(1, "pull")
    c.fault_disk(9, "pull")  # members 0 and 3: different mirror pairs
    assert read_all(c, 1) == data


def test_expansion_resumes_after_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2])], lds=[
        LogicalDriveSpec(1, "A", "0", 24 * MIB, "stripe", 16)]))
    c.set_rebuild_priority("low")
    data = fill(c, 1, 4)
    c.expand_unit(1, [3])
    for _ in range(3):
        d = c.next_deadline()
        assert d is not None
        env.clock.advance(max(0.0, d - env.clock.now()))
        c.advance(env.clock.now())
    pct = unit(c, 1)["expand_percent"]
    assert 0 < pct < 100
    c.close()
    c2 = env.open(tmp_path)
    assert unit(c2, 1)["state"] == "expanding" and unit(c2, 1)["expand_percent"] == pct
    assert read_all(c2, 1) == data
    run_idle(c2, env.clock)
    assert unit(c2, 1)["bays"] == [1, 2, 3] and read_all(c2, 1) == data


def test_expansion_journal_replays_an_interrupted_step(env: Clocked, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2, 3])], lds=[
        LogicalDriveSpec(1, "A", "5", 16 * MIB, "p", 16)]))
    data = fill(c, 1, 6)
    c.expand_unit(1, [4])
    import firmware_model.controller.expansion as ctl

    real = ctl.restripe
    calls = {"n": 0}

    def crash_midway(old: RaidVolume, new: RaidVolume, start: int, count: int) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            # half the step reaches the drives, then the process dies
            real(old, new, start, count // 2 // 64 * 64 or 64)
            raise KeyboardInterrupt
        return real(old, new, start, count)

    monkeypatch.setattr(ctl, "restripe", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(5):
            c.advance(env.clock.now())
    monkeypatch.setattr(ctl, "restripe", real)
    assert (tmp_path / "expand-journal.bin").exists()
    c.nvram.save()  # what the process had in NVRAM: the watermark before the step
    c.enclosure.close()
    c2 = env.open(tmp_path)
    assert not (tmp_path / "expand-journal.bin").exists()
    run_idle(c2, env.clock)
    assert read_all(c2, 1) == data


def test_expand_refuses_what_it_cannot_do(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    with pytest.raises(ControllerError):
        c.expand_unit(1, [3])  # a member of B
    with pytest.raises(ControllerError):
        c.expand_unit(1, [8])  # RAID 1 -> 1+0 needs an even count
    c.fault_disk(3, "fail")
    with pytest.raises(ControllerError):
        c.expand_unit(2, [8])  # array B is rebuilding
