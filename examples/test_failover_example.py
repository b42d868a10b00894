"""An example to copy into your own CI: an emulated HP MSA500 per test, with pytest.

    pip install msa500-emu pytest      # the `msa500` fixtures come with the package
    pytest test_failover_example.py    # add --msa500-mode=inprocess to skip the child process

Each test gets a fresh array on free loopback ports with its state in the test's tmp_path;
it is stopped (drive images flushed) when the test ends. See docs/testing.md.
"""

from __future__ import annotations

import time

import pytest

from msa500_emu.testing import MSA500

# A small shelf: 256 MiB drives (sparse files), a RAID 5 unit on bays 1-4, bay 5 unassigned.
SHELF = """
[shelf]
serial = "EXAMPLE001"
drive_size = "256MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2, 3, 4]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "5"
size = "128MiB"
name = "data"
"""

pytestmark = pytest.mark.msa500(config=SHELF)  # the `msa500` fixture builds this shelf

NOT_READY = 0x02
STANDBY = (0x04, 0x0B)  # LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY STATE
UNAVAILABLE = (0x04, 0x0C)  # LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN UNAVAILABLE STATE


def test_write_then_read_over_iscsi(msa500: MSA500) -> None:
    host = msa500.initiator(port=1)  # an iSCSI session on controller port 1, logged in
    block = bytes(range(256)) * 2
    host.write(1, 2048, block)  # LUN 1, LBA 2048
    assert host.read(1, 2048, 1) == block
    # Anything that speaks iSCSI can use the array too: a libiscsi/QEMU URL per port and LUN.
    assert msa500.url(port=1, lun=1).startswith("iscsi://127.0.0.1:")


def test_a_failed_drive_in_raid5_still_reads(msa500: MSA500) -> None:
    host = msa500.initiator(port=1)
    data = b"\x5a" * 64 * 1024
    host.write(1, 0, data)
    msa500.fail_drive(2)  # FAULT DISK2 FAIL
    assert msa500.unit(1)["state"] != "ok"  # degraded (no spare here)
    assert host.read(1, 0, len(data) // 512) == data  # reconstructed from parity
    assert any(e["code"] == "DRIVE_FAILED" for e in msa500.events())


def test_rso_fails_over_when_the_heartbeat_stops(msa500: MSA500) -> None:
    msa500.rso_enable(timeout=2, act_alone=True)  # the controller fences port 1 by itself
    primary = msa500.initiator(port=1)
    primary.write(1, 10, b"\x11" * 512)
    recovery = msa500.initiator(port=2)
    r = recovery.test_unit_ready(1)
    assert r.sense_key == NOT_READY and r.asc_ascq == STANDBY  # port 2 waits in standby

    for _ in range(4):  # the primary is alive: heartbeats every 0.5 s keep port 1 in charge
        assert not msa500.heartbeat().failed_over
        time.sleep(0.5)
    assert not msa500.rso_status()["failed_over"]

    # The primary dies: no more heartbeats. Within the timeout (+ a tick) the array fails over.
    status = msa500.wait_for_failover(timeout=10)
    assert status["fenced_port"] == 1 and status["active_port"] == 2

    r = primary.clear_unit_attentions(1)  # every nexus hears 2A/06 of the change first (SPC-4), then:
    assert r.sense_key == NOT_READY and r.asc_ascq == UNAVAILABLE  # port 1 is fenced
    recovery.clear_unit_attentions(1)  # 2A/06 ASYMMETRIC ACCESS STATE CHANGED on port 2
    assert recovery.read(1, 10, 1) == b"\x11" * 512  # port 2 serves the data
