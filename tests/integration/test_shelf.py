"""The shelf over iSCSI with real initiators: RAID units degrade, rebuild onto spares, recover."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import RunningArray, need, start_array

pytestmark = pytest.mark.slow

SHELF = """
[shelf]
serial = "RAIDTEST01"
drive_size = "512MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2]
spares = [7]
[[shelf.arrays]]
name = "B"
bays = [3, 4, 5, 6]
spares = [7]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
size = "64MiB"
name = "boot"
[[shelf.logical_drives]]
lun = 2
array = "B"
raid = "5"
size = "96MiB"
stripe_kib = 64
name = "data"
"""


def ctl(arr: RunningArray, *words: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, *words],
                         capture_output=True, text=True, timeout=30, check=False)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def units(arr: RunningArray) -> dict[int, dict]:
    return {u["lun"]: u for u in json.loads(ctl(arr, "--json", "SHOW UNITS").stdout)["result"]}


def wait_unit(arr: RunningArray, lun: int, state: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        u = units(arr)[lun]
        if u["state"] == state:
            return u
        time.sleep(0.2)
    raise AssertionError(f"unit {lun} never reached {state}: {units(arr)[lun]}")


def qemu_io(url: str, *cmds: str) -> subprocess.CompletedProcess[str]:
    args = [need("qemu-io"), "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    return subprocess.run([*args, url], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    d = tmp_path_factory.mktemp("shelf")
    (d / "shelf.toml").write_text(SHELF)
    arr = start_array(d / "state", d / "shelf.toml")
    yield arr
    assert arr.stop() == 0, arr.log.read_text()[-3000:]


def test_units_spares_and_disks_are_shown(shelf: RunningArray) -> None:
    u = units(shelf)
    assert u[1]["raid"] == "1" and u[1]["bays"] == [1, 2] and u[1]["state"] == "ok"
    assert u[2]["raid"] == "5" and u[2]["bays"] == [3, 4, 5, 6] and u[2]["stripe_kib"] == 64
    text = ctl(shelf, "show", "units").stdout
    assert re.search(r"^\s*2\s+data\s+B\s+RAID 5\s", text, re.MULTILINE), text  # unit 2's row names RAID 5
    spares = json.loads(ctl(shelf, "--json", "SHOW SPARES").stdout)["result"]
    assert [s["bay"] for s in spares] == [7]
    disks = {d["bay"]: d for d in json.loads(ctl(shelf, "--json", "SHOW DISKS").stdout)["result"]}
    assert len(disks) == 14


def test_fail_rebuild_fail_again_data_identical(shelf: RunningArray) -> None:
    url = shelf.url(1, 2)
    w = qemu_io(url, "write -P 0x6b 0 32M", "write -P 0x2d 40M 8M")
    assert w.returncode == 0, w.stderr
    ctl(shelf, "SET GLOBALS REBUILD_PRIORITY=HIGH")
    errors: list[str] = []

    def reader() -> None:  # host I/O keeps running through the failure
        for _ in range(5):
            r = qemu_io(url, "read -P 0x6b 0 32M", "read -P 0x2d 40M 8M")
            if r.returncode != 0 or "Pattern verification failed" in r.stdout:
                errors.append(r.stdout + r.stderr)

    t = threading.Thread(target=reader)
    t.start()
    ctl(shelf, "FAULT DISK4 FAIL")
    t.join(120)
    assert not errors, errors[:1]
    u = wait_unit(shelf, 2, "ok")
    assert 7 in u["bays"] and 4 not in u["bays"]
    r = qemu_io(url, "read -P 0x6b 0 32M", "read -P 0x2d 40M 8M")
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout
    ctl(shelf, "FAULT DISK5 FAIL")  # the rebuilt array survives another failure
    r = qemu_io(url, "read -P 0x6b 0 32M", "read -P 0x2d 40M 8M")
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout
    assert units(shelf)[2]["state"] in ("degraded", "interim recovery")
    events = json.loads(ctl(shelf, "--json", "SHOW EVENTS").stdout)["result"]
    codes = [e["code"] for e in events]
    for code in ("DRIVE_FAILED", "SPARE_ACTIVATED", "REBUILD_STARTED", "REBUILD_DONE"):
        assert code in codes, codes


def test_add_and_delete_unit_seen_by_hosts(shelf: RunningArray) -> None:
    ctl(shelf, 'ADD UNIT 5 DATA="DISK8-DISK11" RAID_LEVEL=ADG STRIPE_SIZE=32 SIZE=64MB')
    ls = subprocess.run([need("iscsi-ls"), "-s", f"iscsi://{shelf.portal(1)}"], capture_output=True,
                        text=True, timeout=30, check=False)
    assert "Lun:5" in ls.stdout, ls.stdout
    w = qemu_io(shelf.url(1, 5), "write -P 0x44 0 4M", "read -P 0x44 0 4M")
    assert w.returncode == 0 and "Pattern verification failed" not in w.stdout
    ctl(shelf, "DELETE UNIT 5")
    assert 5 not in units(shelf)


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        (["SHOW", "NOTHING"], "unknown SHOW"),
        (["ADD", "UNIT", "9", "DATA=DISK1-DISK99", "RAID_LEVEL=5"], "bays are 1-14"),
        (["ADD", "UNIT", "9", "DATA=DISK12-DISK13", "RAID_LEVEL=7"], "RAID_LEVEL=7"),
        (["FAULT", "DISK3", "EXPLODE"], "unknown fault"),
        (["DELETE", "UNIT", "31"], "31"),
    ],
)
def test_wrong_commands_get_one_line(shelf: RunningArray, words: list[str], needle: str) -> None:
    out = ctl(shelf, *words, ok=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and needle in out.stderr, out.stderr


def test_restart_brings_the_shelf_back(tmp_path: Path) -> None:
    (tmp_path / "shelf.toml").write_text(SHELF)
    first = start_array(tmp_path / "st", tmp_path / "shelf.toml")
    try:
        assert qemu_io(first.url(1, 1), "write -P 0x17 1M 1M").returncode == 0
        ctl(first, "FAULT DISK2 FAIL")
        before = units(first)
    finally:
        assert first.stop() == 0
    second = start_array(tmp_path / "st")  # no config: the drives and NVRAM say it all
    try:
        after = units(second)
        assert {k: (v["raid"], v["size_bytes"]) for k, v in after.items()} == {
            k: (v["raid"], v["size_bytes"]) for k, v in before.items()}
        r = qemu_io(second.url(1, 1), "read -P 0x17 1M 1M")
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout
    finally:
        second.stop()


def test_media_error_is_reconstructed_on_parity_and_reported_on_raid0(shelf: RunningArray) -> None:
    from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

    ctl(shelf, "SET CACHE DISABLE")  # else the array accelerator serves the block, as it should
    ctl(shelf, 'ADD UNIT 6 DATA="DISK12" RAID_LEVEL=0 SIZE=16MB')
    ini = Initiator("127.0.0.1", shelf.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:media"))
    ini.login(shelf.target)
    ini.clear_unit_attentions(6)
    ini.write(6, 0, b"\x33" * 65536)
    disks = {d["bay"]: d for d in json.loads(ctl(shelf, "--json", "SHOW DISKS").stdout)["result"]}
    assert disks[12]["role"] == "member"
    ctl(shelf, "FAULT DISK12 MEDIA-ERROR 0 4096")  # drive blocks: covers the unit's start
    r = ini.scsi(6, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]), read_len=4096)
    assert r.status == 2 and r.sense_key == 0x03 and r.asc_ascq == (0x11, 0x00), r
    ctl(shelf, "FAULT DISK12 CLEAR")
    assert ini.read(6, 0, 8) == b"\x33" * 4096
    ini.logout()
    ctl(shelf, "DELETE UNIT 6")
    ctl(shelf, "SET CACHE ENABLE")


def test_latency_injection_slows_that_units_commands(shelf: RunningArray) -> None:
    from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

    ini = Initiator("127.0.0.1", shelf.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:slow"))
    ini.login(shelf.target)
    ini.clear_unit_attentions(1)
    ctl(shelf, "FAULT DISK1 LATENCY 300")
    t0 = time.monotonic()
    assert ini.test_unit_ready(1).status == 0
    held = time.monotonic() - t0
    ctl(shelf, "FAULT DISK1 CLEAR")
    assert ini.test_unit_ready(1).status == 0
    ini.logout()
    assert held >= 0.3  # a lower bound: the injected fault, not a speed goal


def test_extend_and_expand_keep_data_and_show_new_capacity(shelf: RunningArray) -> None:
    ctl(shelf, 'ADD UNIT 7 DATA="DISK13-DISK14" RAID_LEVEL=1 SIZE=32MB')
    url = shelf.url(1, 7)
    assert qemu_io(url, "write -P 0x71 0 32M").returncode == 0
    ctl(shelf, "EXTEND UNIT 7 SIZE=48MB")
    cap = subprocess.run([need("iscsi-readcapacity16"), url], capture_output=True, text=True, timeout=30,
                         check=False)
    assert f"Total size:{48 << 20}" in cap.stdout, cap.stdout
    bad = ctl(shelf, 'EXPAND UNIT 7 DATA="DISK12"', ok=False)  # 1+0 grows by mirror pairs
    assert bad.returncode == 1 and "RAID 10 needs at least 4 members" in bad.stderr
    ctl(shelf, 'EXPAND UNIT 7 DATA="DISK11-DISK12"')
    u = wait_unit(shelf, 7, "ok")
    r = qemu_io(url, "read -P 0x71 0 32M", "read -P 0 32M 16M")
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    assert sorted(u["bays"]) == [11, 12, 13, 14] and u["raid"] == "1+0"
    ctl(shelf, "DELETE UNIT 7")
