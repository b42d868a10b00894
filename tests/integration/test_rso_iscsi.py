"""RSO over iSCSI: heartbeat on port 1, acknowledgment on port 2, timeout, fencing, restore."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

from ..conftest import RunningArray, need, start_array

pytestmark = pytest.mark.slow

SHELF = """
[shelf]
serial = "RSOTEST001"
drive_size = "256MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
size = "64MiB"
"""


def ctl(arr: RunningArray, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, *words],
                          capture_output=True, text=True, timeout=30, check=False)


def host(arr: RunningArray, port: int, name: str) -> Initiator:
    ini = Initiator("127.0.0.1", arr.port1 if port == 1 else arr.port2,
                    InitiatorConfig(initiator_name=f"iqn.2026-11.test:{name}"))
    ini.login(arr.target)
    ini.clear_unit_attentions(0)
    ini.clear_unit_attentions(1)
    return ini


def vendor(ini: Initiator, opcode: int, alloc: int = 16, data: bytes = b"") -> tuple[int, bytes, tuple[int, int]]:
    cdb = bytes([opcode, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", len(data) or alloc) + b"\0"
    r = ini.scsi(0, cdb, data=data) if data else ini.scsi(0, cdb, read_len=alloc)
    return r.status, r.data, r.asc_ascq


def configure(ini: Initiator, timeout_ms: int, act_alone: bool) -> int:
    return vendor(ini, 0xC4, data=struct.pack(">BxxxI", 1 | (2 if act_alone else 0), timeout_ms))[0]


@pytest.fixture
def arr(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "s.toml").write_text(SHELF)
    running = start_array(tmp_path / "st", tmp_path / "s.toml")
    yield running
    running.stop()


def test_timeout_fences_port1_for_every_session_and_port2_takes_over(arr: RunningArray) -> None:
    primary = host(arr, 1, "primary")
    recovery = host(arr, 2, "recovery")
    assert configure(primary, 1500, act_alone=False) == 0
    status, block, _ = vendor(recovery, 0xC1)  # the recovery joins
    assert status == 0
    r = recovery.scsi(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read_len=512)
    assert r.status == 2 and r.sense_key == 0x02 and r.asc_ascq == (0x04, 0x0B)  # standby
    primary.clear_unit_attentions(1)
    primary.write(1, 10, b"\x11" * 512)
    for _ in range(3):  # heartbeats keep the primary in charge; the ack keeps its alarm quiet
        assert vendor(primary, 0xC0)[0] == 0
        status, block, _ = vendor(recovery, 0xC1)
        assert block[1] & 0x08 == 0  # no TAKE_OVER
        time.sleep(0.3)
    deadline = time.monotonic() + 10  # the primary dies: no more heartbeats
    while time.monotonic() < deadline:
        status, block, _ = vendor(recovery, 0xC1)
        if block[1] & 0x08:
            break
        time.sleep(0.1)
    assert block[1] & 0x08, "the recovery never saw the heartbeat time out"
    assert vendor(recovery, 0xC3, alloc=0)[0] == 0  # the monitor fences the primary
    r = primary.scsi(1, struct.pack(">BBQIBB", 0x8A, 0, 10, 1, 0, 0), data=b"\x99" * 512)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)  # fenced: unavailable
    again = host(arr, 1, "primary-reborn")  # a new session from the primary is fenced too
    r = again.scsi(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read_len=512)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)
    recovery.clear_unit_attentions(1)  # 2A/06: port 2 is active now
    assert recovery.read(1, 10, 1) == b"\x11" * 512
    out = ctl(arr, "RSO", "RESTORE")  # refused while the recovery is logged in
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    recovery.logout()
    assert ctl(arr, "RSO", "RESTORE").returncode == 0
    st = json.loads(ctl(arr, "--json", "RSO", "STATUS").stdout)["result"]
    assert st["failovers"] >= 1 and st["fenced_port"] in (0, None)
    codes = [e["code"] for e in json.loads(ctl(arr, "--json", "SHOW", "EVENTS").stdout)["result"]]
    assert "RSO_TIMEOUT" in codes and "RSO_FAILOVER" in codes and "RSO_RESTORED" in codes
    again.clear_unit_attentions(1)
    assert again.read(1, 10, 1) == b"\x11" * 512
    primary.close()


def test_qemu_on_a_fenced_port_cannot_write(arr: RunningArray) -> None:
    primary = host(arr, 1, "p")
    assert configure(primary, 60000, act_alone=False) == 0
    assert ctl(arr, "RSO", "FAILOVER").returncode == 0  # F8 from the management side
    w = subprocess.run([need("qemu-io"), "-f", "raw", "-c", "write -P 0x66 0 64k", arr.url(1, 1)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert "wrote" not in w.stdout
    r = subprocess.run([need("qemu-io"), "-f", "raw", "-c", "read -P 0 0 64k", arr.url(2, 1)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr
    primary.close()


def test_wrong_port_and_bad_ctl_get_precise_answers(arr: RunningArray) -> None:
    recovery = host(arr, 2, "r")
    status, _, asc = vendor(recovery, 0xC0)  # a heartbeat through port 2
    assert status == 2 and asc == (0x80, 0x01)
    status, _, asc = vendor(recovery, 0xC1)  # acknowledge before RSO is configured
    assert status == 2 and asc == (0x2C, 0x00)
    out = ctl(arr, "RSO", "ENABLE", "TIMEOUT=soon")
    assert out.returncode == 1 and "TIMEOUT=soon" in out.stderr
    recovery.logout()
