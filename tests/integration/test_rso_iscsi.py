"""RSO over iSCSI: heartbeat on port 1, acknowledgment on port 2, timeout, fencing, restore."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import pytest

from msa500_emu.iscsi.initiator import Initiator
from msa500_emu.testing import MSA500, CtlError, mirror_shelf, vendor_cdb

from ..conftest import need

SHELF = mirror_shelf("RSOTEST001", size="64MiB")

# Each test gets a fresh array with this shelf from the plugin's `msa500` fixture.
pytestmark = [pytest.mark.slow, pytest.mark.msa500(config=SHELF)]


def cli(arr: MSA500, *words: str) -> subprocess.CompletedProcess[str]:
    """The `msa500-emu ctl` command line itself (its one-line errors and exit codes)."""
    return subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, *words],
                          capture_output=True, text=True, timeout=30, check=False)


def host(arr: MSA500, port: int, name: str) -> Initiator:
    return arr.initiator(port, f"iqn.2026-11.test:{name}", clear=(0, 1))


def vendor(ini: Initiator, opcode: int, alloc: int = 16, data: bytes = b"") -> tuple[int, bytes, tuple[int, int]]:
    cdb = vendor_cdb(opcode, len(data) or alloc)
    r = ini.scsi(0, cdb, data=data) if data else ini.scsi(0, cdb, read_len=alloc)
    return r.status, r.data, r.asc_ascq


def configure(ini: Initiator, timeout_ms: int, act_alone: bool) -> int:
    return vendor(ini, 0xC4, data=struct.pack(">BxxxI", 1 | (2 if act_alone else 0), timeout_ms))[0]


def test_timeout_fences_port1_for_every_session_and_port2_takes_over(msa500: MSA500) -> None:
    primary = host(msa500, 1, "primary")
    recovery = host(msa500, 2, "recovery")
    assert configure(primary, 1500, act_alone=False) == 0
    status, block, _ = vendor(recovery, 0xC1)  # the recovery joins
    assert status == 0
    r = recovery.scsi(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read_len=512)
    assert r.status == 2 and r.sense_key == 0x06 and r.asc_ascq == (0x2A, 0x06)  # told: port 2 changed
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
    primary.clear_unit_attentions(1)  # 2A/06 on both ports: port 1 is unavailable now
    r = primary.scsi(1, struct.pack(">BBQIBB", 0x8A, 0, 10, 1, 0, 0), data=b"\x99" * 512)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)  # fenced: unavailable
    again = host(msa500, 1, "primary-reborn")  # a new session from the primary is fenced too
    r = again.scsi(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read_len=512)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)
    recovery.clear_unit_attentions(1)  # 2A/06: port 2 is active now
    assert recovery.read(1, 10, 1) == b"\x11" * 512
    out = cli(msa500, "RSO", "RESTORE")  # refused while the recovery is logged in: one line, exit 1
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    with pytest.raises(CtlError, match="logged in on port 2"):
        msa500.ctl("RSO", "RESTORE")
    recovery.logout()
    msa500.rso_restore()
    st = msa500.rso_status()
    assert st["failovers"] >= 1 and st["fenced_port"] in (0, None)
    codes = [e["code"] for e in msa500.events()]
    assert "RSO_TIMEOUT" in codes and "RSO_FAILOVER" in codes and "RSO_RESTORED" in codes
    again.clear_unit_attentions(1)
    assert again.read(1, 10, 1) == b"\x11" * 512


def test_a_cut_link_hands_over_to_the_recovery_monitor(msa500: MSA500) -> None:
    """The same drill through the plugin's RSO helpers: the primary keeps heartbeating, but
    the recovery stops hearing it (LINK2 DOWN); the monitor sees TAKE_OVER and fences."""
    msa500.rso_enable(timeout=1, act_alone=False)
    msa500.initiator(1).write(1, 20, b"\x22" * 512)
    assert msa500.acknowledge().secondary_joined
    since = msa500.last_event_id()
    with msa500.heartbeating(interval=0.2) as beat:
        msa500.link_down(2)
        st = msa500.wait_for_failover(timeout=10, as_recovery=True)
    assert beat.count > 0 and not beat.errors
    assert st["state"] == "secondaryRunningAuto" and st["active_port"] == 2
    assert msa500.wait_for_event("RSO_FAILOVER", since=since)["severity"] in ("warning", "critical")
    r = msa500.initiator(1).test_unit_ready(1)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)
    assert msa500.initiator(2).read(1, 20, 1) == b"\x22" * 512


def test_qemu_on_a_fenced_port_cannot_write(msa500: MSA500) -> None:
    primary = host(msa500, 1, "p")
    assert configure(primary, 60000, act_alone=False) == 0
    msa500.rso_failover()  # F8 from the management side
    w = subprocess.run([need("qemu-io"), "-f", "raw", "-c", "write -P 0x66 0 64k", msa500.url(1, 1)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert "wrote" not in w.stdout
    r = subprocess.run([need("qemu-io"), "-f", "raw", "-c", "read -P 0 0 64k", msa500.url(2, 1)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr


def test_wrong_port_and_bad_ctl_get_precise_answers(msa500: MSA500) -> None:
    recovery = host(msa500, 2, "r")
    status, _, asc = vendor(recovery, 0xC0)  # a heartbeat through port 2
    assert status == 2 and asc == (0x80, 0x01)
    status, _, asc = vendor(recovery, 0xC1)  # acknowledge before RSO is configured
    assert status == 2 and asc == (0x2C, 0x00)
    out = cli(msa500, "RSO", "ENABLE", "TIMEOUT=soon")
    assert out.returncode == 1 and "TIMEOUT=soon" in out.stderr
    with pytest.raises(CtlError, match="TIMEOUT=soon"):
        msa500.ctl("RSO ENABLE TIMEOUT=soon")
    recovery.logout()
