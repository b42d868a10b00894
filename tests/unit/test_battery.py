"""The cache battery: charge and hold-up on the clock, write-through while it is not ok, power cuts."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from firmware_model.battery import Battery, BatteryState
from firmware_model.cache import CacheSettings
from firmware_model.controller import Controller, ControllerError, ShelfSpec
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from tests.unit.shelf_helpers import HOST, Clocked, codes, pattern, read, run_idle, sense, small_spec, write

OTHER = Nexus("iqn.2026-01.test:other,i,0x000002", 2)
TUR = bytes(6)


def spec(**kw: Any) -> ShelfSpec:
    s = small_spec()
    s.cache = CacheSettings(size_mb=4, **{"charge_s": 100.0, "holdup_s": 1000.0, "spinup_s": 10.0, **kw})
    return s


def raw(c: Controller, lun: int, cdb: bytes, data: bytes = b"", nexus: Nexus = HOST) -> ScsiResult:
    return c.target.execute(ScsiRequest(nexus, lun, cdb, data, len(data)))


def settle(c: Controller, *nexuses: Nexus) -> None:
    """Take the pending unit attentions of every nexus on LUNs 1-2."""
    for n in nexuses or (HOST,):
        for lun in (1, 2):
            for _ in range(8):
                if raw(c, lun, TUR, nexus=n).status == Status.GOOD:
                    break


def wce(c: Controller, lun: int, pc: int = 0) -> int:
    res = raw(c, lun, bytes((0x1A, 0x08, 0x08 | pc << 6, 0, 0xFF, 0)))
    assert res.status == Status.GOOD, sense(res)
    return res.data[4 + 2] & 0x04


def on_drives(c: Controller, lun: int, lba: int, blocks: int) -> bytes:
    view = c.lds[lun].view
    assert view is not None
    return view.read(lba, blocks)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


# --------------------------------------------------------------------------- the model
def test_battery_charges_and_holds_on_the_clock() -> None:
    b = Battery(0.0, holdup_s=1000.0, charge_s=100.0)
    assert b.state(0) is BatteryState.OK and b.holdup_left(0) == 1000.0
    b.power_off(0.0)
    assert b.charge(500.0) == pytest.approx(50.0)
    b.power_on(500.0)
    assert b.state(500.0) is BatteryState.CHARGING
    assert b.next_change(500.0) == pytest.approx(540.0)  # 50 % -> 90 % at 1 %/s
    assert b.state(540.0) is BatteryState.OK
    b.power_off(540.0)
    b.power_on(1400.0)  # drained below 25 %: low until charged
    assert b.state(1400.0) is BatteryState.LOW
    b.fail(1401.0)
    assert b.state(1500.0) is BatteryState.FAILED and b.holdup_left(1500.0) == 0
    assert b.next_change(1500.0) is None
    b.remove(1500.0)
    assert b.state(1500.0) is BatteryState.MISSING
    b.restore(1600.0)
    assert b.state(1600.0) is BatteryState.CHARGING and b.charge(1650.0) == pytest.approx(50.0)
    b.set_low(1650.0)
    assert b.state(1650.0) is BatteryState.LOW and b.charge(1650.0) == pytest.approx(10.0)
    assert b.state(1730.0) is BatteryState.OK


# ------------------------------------------------------------------- write-through switch
def test_failed_battery_switches_to_write_through_and_hosts_see_it(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    settle(c, HOST, OTHER)
    assert wce(c, 1) and wce(c, 2) and wce(c, 1, pc=1)  # WCE on and changeable
    data = pattern(1, 8 * 512)
    assert write(c, 2, 0, data).status == Status.GOOD
    assert c.cache.dirty_lines == 1
    out = c.fault_battery("fail")
    assert out["state"] == "failed"
    assert on_drives(c, 2, 0, 8) == data  # destaged before going write-through
    st = c.cache_stats()
    assert st["state"] == "write-through" and st["reason"] == "battery failed" and st["dirty_bytes"] == 0
    for n in (HOST, OTHER):  # MODE PARAMETERS CHANGED, every nexus, every logical drive
        for lun in (1, 2):
            res = raw(c, lun, TUR, nexus=n)
            assert res.status == Status.CHECK_CONDITION and sense(res) == (0x6, 0x2A, 0x01)
    assert wce(c, 1) == 0 and wce(c, 1, pc=1) == 0  # WCE reads 0 and cannot be set
    page = bytearray(raw(c, 1, bytes((0x1A, 0x08, 0x08, 0, 0xFF, 0))).data[4:])
    page[0] &= 0x3F
    page[2] |= 0x04
    res = raw(c, 1, bytes((0x15, 0x10, 0, 0, 4 + len(page), 0)), bytes(4) + bytes(page))
    assert res.status == Status.CHECK_CONDITION and sense(res) == (0x5, 0x26, 0x00)
    assert write(c, 2, 8, data).status == Status.GOOD
    assert on_drives(c, 2, 8, 8) == data and c.cache.dirty_lines == 0  # write-through
    assert "BATTERY_FAILED" in codes(c) and "CACHE_WRITE_THROUGH" in codes(c)
    with pytest.raises(ControllerError):
        c.fault_battery("fail")
    # a new pack charges; write-back comes back on the clock
    assert c.fault_battery("restore")["state"] == "charging"
    assert c.next_deadline() == pytest.approx(env.clock.now() + 90.0)
    run_idle(c, env.clock)
    assert c.cache_stats()["state"] == "write-back" and c.cache_stats()["battery"] == "ok"
    assert codes(c)[-2:] == ["BATTERY_CHARGED", "CACHE_WRITE_BACK"]
    res = raw(c, 2, TUR, nexus=OTHER)
    assert sense(res) == (0x6, 0x2A, 0x01)
    settle(c)
    assert wce(c, 2, pc=0) and wce(c, 2, pc=1)


def test_the_hosts_own_wce_choice_survives_battery_events(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    settle(c)
    page = bytearray(raw(c, 1, bytes((0x1A, 0x08, 0x08, 0, 0xFF, 0))).data[4:])
    page[0] &= 0x3F
    page[2] &= ~0x04
    assert raw(c, 1, bytes((0x15, 0x10, 0, 0, 4 + len(page), 0)), bytes(4) + bytes(page)).status == Status.GOOD
    assert write(c, 1, 0, pattern(2, 4096)).status == Status.GOOD
    assert on_drives(c, 1, 0, 8) == pattern(2, 4096)  # host WCE=0: written through
    c.fault_battery("low")
    assert c.cache_stats()["reason"] == "battery low"
    settle(c)
    c.fault_battery("restore")
    run_idle(c, env.clock)
    settle(c)
    assert wce(c, 1) == 0 and wce(c, 2) != 0


def test_disabled_cache_and_missing_battery_are_write_through(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    c.fault_battery("remove")
    assert c.describe()["battery"]["state"] == "missing"
    assert c.cache_stats()["state"] == "write-through"
    c.fault_battery("restore")
    run_idle(c, env.clock)
    c.set_cache(enabled=False)
    assert c.cache_stats()["reason"] == "cache disabled"
    with pytest.raises(ControllerError):
        c.fault_battery("explode")


def test_battery_state_persists_across_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    c.fault_battery("fail")
    c.close()
    c2 = env.open(tmp_path, spec())
    assert c2.describe()["battery"]["state"] == "failed"
    assert c2.cache_stats()["state"] == "write-through"
    settle(c2)
    assert wce(c2, 1) == 0


# ---------------------------------------------------------------------------- power
def test_power_cut_within_hold_up_loses_nothing(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    settle(c)
    data = pattern(3, 16 * 512)
    assert write(c, 2, 40, data).status == Status.GOOD
    old = on_drives(c, 2, 40, 16)
    out = c.power_off()
    assert out["dirty_bytes"] == 16 * 512 and not c.powered
    assert c.next_deadline() is None
    assert raw(c, 1, TUR).status == Status.CHECK_CONDITION and sense(raw(c, 1, TUR)) == (0x2, 0x04, 0x00)
    with pytest.raises(ControllerError):
        c.set_cache(enabled=False)
    with pytest.raises(ControllerError):
        c.power_off()
    assert on_drives(c, 2, 40, 16) == old  # nothing written out at the cut
    env.clock.advance(500.0)  # half the hold-up time
    c.power_on()
    assert c.powered and on_drives(c, 2, 40, 16) == data
    assert codes(c)[-4:] == ["SHELF_POWER_OFF", "CACHE_REPLAYED", "CACHE_WRITE_THROUGH", "SHELF_POWER_ON"]
    # every nexus: POWER ON first (SAM priority), then becoming ready until the drives spun up
    res = raw(c, 2, TUR)
    assert sense(res) == (0x6, 0x29, 0x00)
    assert sense(raw(c, 2, TUR)) == (0x2, 0x04, 0x01)
    assert sense(raw(c, 1, TUR, nexus=OTHER)) == (0x6, 0x29, 0x00)
    env.clock.advance(5.0)
    c.advance(env.clock.now())
    assert sense(raw(c, 2, TUR)) == (0x2, 0x04, 0x01)
    assert c.next_deadline() is not None
    env.clock.advance(5.0)
    c.advance(env.clock.now())
    assert raw(c, 2, TUR).status == Status.GOOD
    assert read(c, 2, 40, 16).data == data
    # half discharged: write-through until the pack is at 90 % again
    assert c.cache_stats()["state"] == "write-through"
    run_idle(c, env.clock)
    assert c.cache_stats()["state"] == "write-back"


def test_power_cut_longer_than_hold_up_loses_exactly_the_unwritten_data(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    settle(c)
    kept = pattern(4, 8 * 512)
    assert write(c, 1, 0, kept).status == Status.GOOD
    run_idle(c, env.clock)  # on the drives
    lost = pattern(5, 24 * 512)
    old = on_drives(c, 1, 100, 24)
    assert write(c, 1, 100, lost).status == Status.GOOD
    c.power_off()
    env.clock.advance(1001.0)
    out = c.power_on()
    assert out["data_lost"] == {1: 24}
    ev = [e for e in c.events() if e["code"] == "CACHE_DATA_LOST"]
    assert len(ev) == 1 and "LUN 1: 24 blocks from LBA 100" in str(ev[0]["message"]) and ev[0]["lun"] == 1
    assert c.cache_stats()["data_lost_blocks"] == {"1": 24}
    env.clock.advance(10.0)
    c.advance(env.clock.now())
    assert sense(raw(c, 1, TUR)) == (0x6, 0x29, 0x00)
    res = raw(c, 1, TUR)  # the loss, once per nexus, as a deferred error naming the first LBA
    assert res.status == Status.CHECK_CONDITION
    assert res.sense[0] & 0x7F == 0x71 and (res.sense[2] & 0xF, res.sense[12], res.sense[13]) == (0x3, 0x0C, 0x00)
    assert res.sense[0] & 0x80 and struct.unpack(">I", res.sense[3:7])[0] == 100
    assert raw(c, 1, TUR).status == Status.GOOD
    assert raw(c, 2, TUR).status == Status.CHECK_CONDITION  # its POWER ON
    assert raw(c, 2, TUR).status == Status.GOOD  # LUN 2 lost nothing
    assert read(c, 1, 100, 24).data == old and read(c, 1, 0, 8).data == kept
    assert c.describe()["battery"]["state"] == "low"


def test_forced_write_back_without_battery_loses_exactly_the_cached_writes(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec())
    c.set_cache(force_write_back=True)
    c.fault_battery("fail")
    st = c.cache_stats()
    assert st["state"] == "write-back" and "forced" in st["reason"] and st["holdup_seconds"] == 0
    safe = pattern(6, 8 * 512)
    cdb = struct.pack(">BBIBHB", 0x2A, 0x08, 0, 0, 8, 0)  # FUA
    assert raw(c, 2, cdb, safe).status in (Status.GOOD, Status.CHECK_CONDITION)
    settle(c)
    assert raw(c, 2, cdb, safe).status == Status.GOOD
    gone = {lba: pattern(lba, 512 * n) for lba, n in ((64, 8), (200, 3), (1000, 16))}
    before = {lba: on_drives(c, 2, lba, len(d) // 512) for lba, d in gone.items()}
    for lba, d in gone.items():
        assert write(c, 2, lba, d).status == Status.GOOD
    c.power_off()
    c.power_on()  # even an instant cut: nothing held the memory
    assert c.data_lost == {2: 27}
    assert on_drives(c, 2, 0, 8) == safe
    for lba, d in gone.items():
        assert on_drives(c, 2, lba, len(d) // 512) == before[lba]
    assert any("LUN 2: 27 blocks from LBA 64" in str(e["message"]) for e in c.events())


def test_power_events_and_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path, spec(spinup_s=0.0))
    with pytest.raises(ControllerError):
        c.power_on()
    assert write(c, 1, 0, pattern(7, 4096)).status == Status.GOOD
    c.power_off()
    del c  # the emulator is killed while the shelf is off: the cache file still holds the data
    c2 = env.open(tmp_path, spec())
    assert c2.powered and on_drives(c2, 1, 0, 8) == pattern(7, 4096)
    d = c2.describe()
    assert d["powered"] and d["cache"]["size_mb"] == 4 and d["battery"]["holdup_seconds"] == 1000.0
