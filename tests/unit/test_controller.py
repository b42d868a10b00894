"""The controller: arrays and logical drives with real RAID, failures, spares, rebuild, restart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from firmware_model.controller import (
    ArraySpec,
    Controller,
    ControllerError,
    LogicalDriveSpec,
    LunSpec,
    ShelfSpec,
)
from firmware_model.scsi.types import ScsiRequest, Status
from tests.unit.shelf_helpers import (
    HOST,
    MIB,
    Clocked,
    codes,
    disk,
    fill,
    info,
    read,
    read_all,
    run_idle,
    sense,
    small_spec,
    tur,
    unit,
    write,
)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


def bare(env: Clocked, tmp_path: Path) -> Controller:
    return env.open(tmp_path, small_spec(arrays=[], lds=[]))


def test_default_shelf_shows_the_product_off(tmp_path: Path) -> None:
    c = Controller(tmp_path, ShelfSpec(), Clocked().clock)
    units = c.units()
    assert [(u["lun"], u["name"], u["raid"], u["bays"], u["size_bytes"]) for u in units] == [
        (1, "boot", "1", [1, 2], 8 << 30),
        (2, "data", "5", [3, 4, 5, 6], 16 << 30),
    ]
    assert units[1]["stripe_kib"] == 64 and units[0]["spares"] == [7]
    roles = [(d["bay"], d.get("role"), d["state"]) for d in c.disks()]
    assert roles[6] == (7, "spare", "spare")
    assert [r[1] for r in roles[7:10]] == ["unassigned"] * 3
    assert all(r[2] == "empty" for r in roles[10:])
    g = c.describe()
    assert g["bays"] == 14 and g["power_supplies"] == ["ok", "ok"] and g["logical_drives"][0]["lun"] == 1
    assert c.target.lun_list() == [0, 1, 2]
    c.close()


def test_legacy_lun_spec_builds_single_drive_raid0(env: Clocked, tmp_path: Path) -> None:
    spec = ShelfSpec(serial="LEGACY01", drive_bytes=[64 * MIB] * 14,
                     luns=[LunSpec(1, 1, 16 * MIB, "test"), LunSpec(2, 2, 8 * MIB), LunSpec(3, 1, 4 * MIB)])
    c = env.open(tmp_path, spec)
    assert [(u["lun"], u["raid"], u["bays"], u["base_offset"]) for u in c.units()] == [
        (1, "0", [1], 0), (2, "0", [2], 0), (3, "0", [1], 16 * MIB)]


@pytest.mark.parametrize(
    ("raid", "bays", "ft", "fatal"),
    [("0", [1], 0, 1), ("1", [2, 3], 1, 3), ("1+0", [4, 5, 6, 7], 1, 6), ("5", [8, 9, 10], 1, 9),
     ("ADG", [11, 12, 13, 14], 2, 13)],
)
def test_every_level_serves_io_and_survives_what_it_should(
    env: Clocked, tmp_path: Path, raid: str, bays: list[int], ft: int, fatal: int
) -> None:
    c = bare(env, tmp_path)
    u = c.add_unit(1, bays, raid, stripe_kib=16, size_bytes=12 * MIB, name="vol")
    assert u["fault_tolerance"] == ft and u["state"] == "ok"
    data = fill(c, 1, seed=len(bays))
    assert read_all(c, 1) == data
    for bay in bays[:ft]:
        c.fault_disk(bay, "fail")
    if ft:
        assert unit(c, 1)["state"] == "interim recovery"
        assert read_all(c, 1) == data
    if raid == "1+0":  # one drive of each mirror pair is survived too
        c.fault_disk(5, "fail")
        assert read_all(c, 1) == data
    c.fault_disk(fatal, "fail")  # the last copy / one drive too many
    assert unit(c, 1)["state"] == "failed"
    res = read(c, 1, 0, 8)
    assert res.status == Status.CHECK_CONDITION and sense(res) == (0x2, 0x04, 0x03)


def test_failed_unit_answers_not_ready_and_request_sense_says_why(env: Clocked, tmp_path: Path) -> None:
    c = bare(env, tmp_path)
    c.add_unit(1, [1], "0", size_bytes=4 * MIB)
    assert tur(c, 1).status == Status.GOOD
    c.fault_disk(1, "pull")
    res = tur(c, 1)
    assert res.status == Status.CHECK_CONDITION and sense(res) == (0x2, 0x04, 0x03)
    assert sense(write(c, 1, 0, bytes(512))) == (0x2, 0x04, 0x03)
    rs = c.target.execute(ScsiRequest(HOST, 1, bytes((3, 0, 0, 0, 18, 0))))
    assert rs.data[2] & 0xF == 0x2 and rs.data[12:14] == b"\x04\x03"
    assert "UNIT_FAILED" in codes(c)
    # the same drive back: a RAID 0 logical drive is re-enabled
    c.fault_disk(1, "insert")
    assert unit(c, 1)["state"] == "ok" and tur(c, 1).status == Status.GOOD


def test_unrecoverable_read_is_medium_error_with_the_lba(env: Clocked, tmp_path: Path) -> None:
    c = bare(env, tmp_path)
    c.set_cache(enabled=False)  # reads must reach the drives, not the array accelerator
    c.add_unit(1, [1], "0", size_bytes=4 * MIB)
    c.add_unit(2, [2, 3, 4], "5", stripe_kib=16, size_bytes=4 * MIB)
    fill(c, 1, 1)
    data2 = fill(c, 2, 2)
    c.fault_disk(1, "media-error", lba=100, count=4)
    res = read(c, 1, 96, 16)
    assert res.status == Status.CHECK_CONDITION and sense(res) == (0x3, 0x11, 0x00)
    assert info(res) == 100 and res.sense[0] & 0x80
    # redundancy covers a media error
    c.fault_disk(3, "media-error", lba=0, count=64)
    assert read_all(c, 2) == data2
    assert disk(c, 3)["media_errors"] == [{"lba": 0, "count": 64}]
    c.fault_disk(3, "clear")
    assert disk(c, 3)["media_errors"] == []


def test_spare_takes_over_rebuilds_and_restores_fault_tolerance(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    c.set_rebuild_priority("medium")
    data = fill(c, 2, 7)
    c.fault_disk(4, "fail")
    assert disk(c, 7)["state"] == "rebuilding" and disk(c, 7)["array"] == "B"
    assert unit(c, 2)["state"] == "rebuilding" and unit(c, 2)["bays"] == [3, 7, 5, 6]
    assert c.spares()[0]["state"] == "active"
    # host I/O carries on during the rebuild
    c.advance(env.clock.now())
    more = bytes(range(256)) * 2 * 64
    assert write(c, 2, 1000, more).status == Status.GOOD
    data = data[: 1000 * 512] + more + data[1000 * 512 + len(more) :]
    assert 0 < unit(c, 2)["rebuild_percent"] < 100
    run_idle(c, env.clock)
    assert unit(c, 2)["state"] == "ok" and unit(c, 2)["fault_tolerance"] == 1
    assert disk(c, 7)["state"] == "ok" and disk(c, 7)["role"] == "member"
    ev = codes(c)
    for code in ("DRIVE_FAILED", "SPARE_ACTIVATED", "REBUILD_STARTED", "REBUILD_PROGRESS", "REBUILD_DONE"):
        assert code in ev
    progress = [e["message"] for e in c.events() if e["code"] == "REBUILD_PROGRESS"]
    assert [m.split()[-2] for m in progress] == ["20%", "50%", "70%"]  # 2 MiB steps of 8 MiB
    assert ev.index("SPARE_ACTIVATED") < ev.index("REBUILD_DONE")
    # redundancy is back: another failure is survived
    c.fault_disk(5, "fail")
    assert unit(c, 2)["state"] == "interim recovery"
    assert read_all(c, 2) == data


def test_replacing_the_failed_drive_copies_back_onto_it_then_frees_the_spare(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    data = fill(c, 1, 3)
    c.fault_disk(2, "fail")
    run_idle(c, env.clock)
    assert unit(c, 1)["bays"] == [1, 7]
    c.fault_disk(2, "insert")  # a new drive in place of the failed one: copy-back from the spare
    assert disk(c, 2)["state"] == "rebuilding" and disk(c, 7)["state"] == "ok"
    assert unit(c, 1)["bays"] == [1, 7] and unit(c, 1)["state"] == "ok"  # the spare stays meanwhile
    assert "SPARE_RELEASED" not in codes(c)
    run_idle(c, env.clock)
    assert "SPARE_RELEASED" in codes(c) and disk(c, 7)["state"] == "spare"
    assert unit(c, 1)["bays"] == [1, 2] and unit(c, 1)["state"] == "ok"
    c.fault_disk(1, "pull")
    # bay 1 pulled: the spare takes over again (the bay shows empty), and the data is there
    assert read_all(c, 1) == data
    assert disk(c, 1)["state"] == "empty" and disk(c, 7)["state"] == "rebuilding"


def test_pulled_drive_put_back_is_brought_up_to_date(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2])],
                                      lds=[LogicalDriveSpec(1, "A", "1", 8 * MIB, "m")]))
    data = bytearray(fill(c, 1, 5))
    c.fault_disk(1, "pull")
    assert unit(c, 1)["state"] == "interim recovery" and disk(c, 1)["state"] == "missing"
    new = b"\x5a" * 4096
    write(c, 1, 8, new)
    data[8 * 512 : 8 * 512 + 4096] = new
    c.fault_disk(1, "insert")
    assert disk(c, 1)["state"] == "rebuilding"
    run_idle(c, env.clock)
    c.fault_disk(2, "pull")
    assert read_all(c, 1) == bytes(data)


def test_restart_restores_configuration_and_data(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    c.add_unit(3, [8, 9, 10], "5", stripe_kib=32, size_bytes=10 * MIB, name="extra")
    c.set_rebuild_priority("low")
    data = fill(c, 3, 11)
    before = c.units()
    gen = c.describe()["generation"]
    c.close()
    c2 = env.open(tmp_path, small_spec(arrays=[], lds=[]))  # the spec only builds new shelves
    assert c2.units() == before
    assert c2.describe()["rebuild_priority"] == "low" and c2.describe()["generation"] > gen
    assert read_all(c2, 3) == data
    assert "CONFIG_RESTORED" in codes(c2)


def test_config_comes_back_from_the_drives_without_nvram(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    before = c.units()
    c.close()
    os.unlink(tmp_path / "controller-nvram.json")
    c2 = env.open(tmp_path)
    assert c2.units() == before


def test_rebuild_resumes_from_the_watermark_after_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    data = fill(c, 2, 21)
    c.set_rebuild_priority("medium")
    c.fault_disk(5, "fail")
    for _ in range(2):  # 2 of the 4 steps of 2 MiB
        d = c.next_deadline()
        assert d is not None
        env.clock.advance(max(0.0, d - env.clock.now()))
        c.advance(env.clock.now())
    done = unit(c, 2)["rebuild_percent"]
    assert done > 0
    c.close()
    nv = json.loads((tmp_path / "controller-nvram.json").read_text())
    assert nv["config"]["rebuilding"] and list(nv["config"]["failed"])
    c2 = env.open(tmp_path)
    assert unit(c2, 2)["state"] == "rebuilding" and unit(c2, 2)["rebuild_percent"] == done
    assert disk(c2, 5)["state"] == "failed" and disk(c2, 7)["state"] == "rebuilding"
    run_idle(c2, env.clock)
    assert unit(c2, 2)["state"] == "ok"
    c2.fault_disk(3, "pull")
    assert read_all(c2, 2) == data


def test_drive_moved_to_another_bay_is_recognised(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(empty=(11, 12, 13, 14)))
    data = fill(c, 2, 4)
    c.close()
    os.rename(tmp_path / "bay04.img", tmp_path / "bay12.img")  # moved while powered off
    c2 = env.open(tmp_path)
    assert unit(c2, 2)["bays"] == [3, 12, 5, 6] and unit(c2, 2)["state"] == "ok"
    assert "DRIVE_MOVED" in codes(c2)
    assert read_all(c2, 2) == data
    # hot: pull bay 5 and push the same drive into bay 13
    serial = disk(c2, 5)["serial"]
    c2.fault_disk(5, "pull")
    assert disk(c2, 7)["state"] == "rebuilding"  # the spare stepped in
    run_idle(c2, env.clock)
    c2.fault_disk(13, "insert", serial=serial)
    assert disk(c2, 13)["serial"] == serial and disk(c2, 13)["role"] == "unassigned"
    assert read_all(c2, 2) == data


def test_pulled_member_in_another_bay_rejoins(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, small_spec(arrays=[ArraySpec("A", [1, 2, 3])],
                                      lds=[LogicalDriveSpec(1, "A", "5", 8 * MIB, "m")], empty=(11,)))
    data = fill(c, 1, 8)
    serial = disk(c, 2)["serial"]
    c.fault_disk(2, "pull")
    c.fault_disk(11, "insert", serial=serial)
    assert unit(c, 1)["bays"] == [1, 11, 3] and disk(c, 11)["state"] == "rebuilding"
    run_idle(c, env.clock)
    assert unit(c, 1)["state"] == "ok" and read_all(c, 1) == data


def test_several_units_per_array_and_delete(env: Clocked, tmp_path: Path) -> None:
    c = bare(env, tmp_path)
    c.add_unit(1, [1, 2, 3], "5", size_bytes=8 * MIB)
    c.add_unit(2, [1, 2, 3], "0", size_bytes=8 * MIB)  # same bays: same array, next extent
    c.add_unit(3, raid="5", array="A", size_bytes=4 * MIB, stripe_kib=16)
    us = c.units()
    assert {u["array"] for u in us} == {"A"}
    # each its own extent: 8 MiB RAID 5 over 3 takes 4 MiB a member, 8 MiB RAID 0 43 stripes of 64 KiB
    assert [u["base_offset"] for u in us] == [0, 4 * MIB, 4 * MIB + 43 * 64 * 1024]
    d1 = fill(c, 1, 1)
    d3 = fill(c, 3, 3)
    c.delete_unit(2)
    assert c.target.lun_list() == [0, 1, 3]
    c.add_unit(4, array="A", raid="5")  # the rest: the largest free run
    assert read_all(c, 1) == d1 and read_all(c, 3) == d3
    c.delete_unit(1)
    c.delete_unit(3)
    c.delete_unit(4)
    assert c.units() == [] and disk(c, 1)["role"] == "unassigned"


def test_operations_refuse_bad_input_with_one_line(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    bad = [
        lambda: c.add_unit(1, [8, 9, 10], "5"),  # LUN in use
        lambda: c.add_unit(40, [8], "0"),
        lambda: c.add_unit(3, [1, 8], "0"),  # bay 1 is a member
        lambda: c.add_unit(3, [8, 9], "5"),  # too few drives
        lambda: c.add_unit(3, [8, 9, 10], "7"),
        lambda: c.add_unit(3, [8, 9, 10], "5", stripe_kib=48),
        lambda: c.add_unit(3, [8, 9, 10], "5", size_bytes=1 << 40),
        lambda: c.add_unit(3, [12], "0"),  # no drive there... the bay holds one in this spec
        lambda: c.delete_unit(9),
        lambda: c.add_spare(1, [3]),
        lambda: c.extend_unit(1, 4 * MIB),
        lambda: c.set_rebuild_priority("urgent"),
        lambda: c.fault_disk(15, "fail"),
        lambda: c.fault_disk(1, "explode"),
        lambda: c.fault_disk(1, "media-error", lba=-1),
        lambda: c.fault_disk(1, "insert"),  # occupied
        lambda: c.fault_psu(3, "fail"),
        lambda: c.fault_fan(1, "wobble"),
        lambda: c.set_temperature(500),
    ]
    for op in bad[:7] + bad[8:]:
        with pytest.raises(ControllerError) as exc:
            op()
        assert "\n" not in str(exc.value) and str(exc.value)


def test_spare_add_and_delete(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    c.add_spare(1, [8])
    assert unit(c, 1)["spares"] == [7, 8] and disk(c, 8)["state"] == "spare"
    c.delete_spare(1, [7])
    assert unit(c, 1)["spares"] == [8] and unit(c, 2)["spares"] == [7]
    assert [s["bay"] for s in c.spares()] == [8, 7] or [s["bay"] for s in c.spares()] == [7, 8]
    with pytest.raises(ControllerError):
        c.delete_spare(1, [7])


def test_enclosure_faults_and_events_persist(env: Clocked, tmp_path: Path) -> None:
    seen: list[str] = []
    c = Controller(tmp_path, small_spec(), env.clock, wall=env.wall, on_event=lambda e: seen.append(e.code))
    c.fault_psu(1, "fail")
    c.fault_fan(2, "fail")
    c.set_temperature(55)
    c.fault_disk(9, "latency", ms=25)
    c.fault_disk(10, "predictive")
    assert disk(c, 10)["state"] == "predictive failure"
    g = c.describe()
    assert g["power_supplies"] == ["failed", "ok"] and g["fans"] == ["ok", "failed"]
    assert g["temperature_c"] == 55 and disk(c, 9)["latency_ms"] == 25
    assert {"PSU_FAILED", "FAN_FAILED", "TEMPERATURE", "DRIVE_LATENCY"} <= set(seen)
    evs = c.events()
    last = evs[-1]
    assert last["time"] == env.walls and last["monotonic"] == env.clock.now() and last["bay"] == 10
    assert c.events(since_id=int(last["id"]) - 1) == [last]
    assert len(c.events(limit=2)) == 2
    c.close()
    c2 = env.open(tmp_path)
    assert c2.describe()["power_supplies"] == ["failed", "ok"] and disk(c2, 9)["latency_ms"] == 25
    ids = [e["id"] for e in c2.events()]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) and len(ids) > len(evs)
    assert c2.events()[: len(evs)] == evs
    c2.fault_psu(1, "restore")
    assert c2.events()[-1]["code"] == "PSU_RESTORED"


def test_rebuild_priority_sets_the_pace(env: Clocked, tmp_path: Path) -> None:
    def rebuild_time(priority: str, where: Path) -> float:
        c = env.open(where)
        c.set_rebuild_priority(priority)
        c.fault_disk(3, "fail")
        t0 = env.clock.now()
        run_idle(c, env.clock)
        c.close()
        return env.clock.now() - t0

    high = rebuild_time("high", tmp_path / "h")
    low = rebuild_time("low", tmp_path / "l")
    # 8 MiB per member to rebuild: low does 1 MiB every 0.5 s, high never waits
    assert high == 0.0 and low == pytest.approx(7 * 0.5)
