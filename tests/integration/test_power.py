"""Shelf power and the cache battery, seen from a host over iSCSI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

from ..conftest import RunningArray, start_array

pytestmark = pytest.mark.slow

SHELF = """
[shelf]
serial = "POWER00001"
drive_size = "256MiB"
[shelf.cache]
spinup_s = 1.5
[[shelf.arrays]]
name = "A"
bays = [1, 2, 3]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "5"
size = "64MiB"
"""


def ctl(arr: RunningArray, *words: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, "--json", *words],
                         capture_output=True, text=True, timeout=30, check=False)
    body = json.loads(out.stdout)
    assert body["ok"], body
    return body["result"]


def host(arr: RunningArray, name: str) -> Initiator:
    ini = Initiator("127.0.0.1", arr.port1, InitiatorConfig(initiator_name=f"iqn.2026-11.test:{name}"))
    ini.login(arr.target)
    return ini


def test_power_cut_with_healthy_battery_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SHELF)
    arr = start_array(tmp_path / "st", tmp_path / "s.toml")
    try:
        ini = host(arr, "p1")
        ini.clear_unit_attentions(1)
        ini.write(1, 100, b"\x5c" * 65536)  # acknowledged from the battery-backed cache
        ctl(arr, "FAULT", "SHELF", "POWER-OFF")
        with pytest.raises((ConnectionError, OSError)):  # the host sees its connection drop
            ini.test_unit_ready(1)
        with pytest.raises(OSError):  # and reconnecting fails while the shelf is off
            host(arr, "p2")
        ctl(arr, "FAULT", "SHELF", "POWER-ON")
        ini = host(arr, "p3")
        r = ini.test_unit_ready(1)
        while r.status == 2 and r.sense_key == 0x06:
            r = ini.test_unit_ready(1)
        assert r.status == 2 and r.sense_key == 0x02 and r.asc_ascq == (0x04, 0x01)  # becoming ready
        deadline = time.monotonic() + 30
        while ini.test_unit_ready(1).status != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ini.read(1, 100, 128) == b"\x5c" * 65536
        ini.logout()
    finally:
        assert arr.stop() == 0


def test_battery_failure_switches_to_write_through_and_hosts_see_it(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SHELF)
    arr = start_array(tmp_path / "st", tmp_path / "s.toml")
    try:
        ini = host(arr, "b1")
        ini.clear_unit_attentions(1)
        sense = bytes([0x1A, 0x08, 0x08, 0, 255, 0])  # MODE SENSE(6), DBD, caching page
        assert ini.scsi(1, sense, read_len=255).data[4 + 2] & 0x04  # WCE: write-back
        ctl(arr, "FAULT", "BATTERY", "FAIL")
        g = ctl(arr, "SHOW", "GLOBALS")
        assert g["cache"]["state"] == "write-through" and g["battery"]["state"] == "failed"
        r = ini.test_unit_ready(1)
        assert r.status == 2 and r.sense_key == 0x06 and r.asc_ascq == (0x2A, 0x01)  # mode parameters changed
        ini.clear_unit_attentions(1)
        assert not ini.scsi(1, sense, read_len=255).data[4 + 2] & 0x04
        ini.write(1, 0, b"\x01" * 4096)
        assert ini.read(1, 0, 8) == b"\x01" * 4096
        ini.logout()
        codes = [e["code"] for e in ctl(arr, "SHOW", "EVENTS")]
        assert "BATTERY_FAILED" in codes and "CACHE_WRITE_THROUGH" in codes
    finally:
        assert arr.stop() == 0
