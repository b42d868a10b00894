"""The test-support handle and fixtures of msa500_emu.testing, on in-process arrays (fast)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from msa500_emu.testing import (
    MSA500,
    CtlError,
    InProcessArray,
    RsoBlock,
    ScsiError,
    StartError,
    WaitTimeout,
    start_array,
)
from msa500_emu.testing.array import _config_path
from msa500_emu.testing.plugin import ArrayFactory

SHELF = """
[shelf]
serial = "UNITPLUG01"
drive_size = "128MiB"
[shelf.cache]
spinup_s = 0
[[shelf.arrays]]
name = "A"
bays = [1, 2]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
size = "32MiB"
name = "mirror"
"""

pytestmark = pytest.mark.msa500(config=SHELF)


@pytest.fixture(scope="module")
def msa500_mode() -> str:
    """This module runs its arrays in-process (the plugin's default is a child process)."""
    return "inprocess"


def test_status_block_parses_every_field() -> None:
    raw = struct.pack(">BBBBIII", 6, 0x01 | 0x02 | 0x10 | 0x20, 2, 1, 1500, 0xFFFFFFFF, 5000)
    b = RsoBlock.parse(raw)
    assert (b.code, b.state, b.active_port, b.fenced_port) == (6, "secondaryRunningAuto", 2, 1)
    assert b.enabled and b.act_alone and b.failed_over and b.secondary_joined
    assert not b.ack_recent and not b.take_over
    assert (b.heartbeat_age_ms, b.ack_age_ms, b.timeout_ms) == (1500, None, 5000)


def test_config_may_be_toml_text_or_a_file(tmp_path: Path) -> None:
    state = tmp_path / "st"
    written = _config_path(SHELF, state)
    assert written == tmp_path / "st.toml" and written.read_text() == SHELF
    f = tmp_path / "mine.toml"
    f.write_text(SHELF)
    assert _config_path(f, state) == f
    assert _config_path(str(f), state) == f
    assert _config_path(None, state) is None


def test_the_fixture_gives_a_running_in_process_array(msa500: MSA500, tmp_path: Path) -> None:
    assert isinstance(msa500, InProcessArray) and msa500.alive
    assert msa500.state_dir == tmp_path / "msa500" and msa500.log == tmp_path / "msa500.log"
    assert msa500.target == "iqn.2003-04.com.hp:msa500.unitplug01"
    assert msa500.portal(2) == f"127.0.0.1:{msa500.port2}" and msa500.port1 != msa500.port2
    assert msa500.url(2, 1) == f"iscsi://127.0.0.1:{msa500.port2}/{msa500.target}/1"
    assert msa500.health()["status"] == "ok"
    assert msa500.describe()["serial"] == "UNITPLUG01"
    assert "Recovery Server Option" in msa500.ctl("RSO STATUS", json=False)
    with pytest.raises(CtlError, match="unknown command 'FROB'") as err:
        msa500.ctl("FROB", "THE", "ARRAY")
    assert err.value.command == "FROB THE ARRAY"
    with pytest.raises(ValueError, match="ports 1 and 2"):
        msa500.url(3)


def test_drive_faults_through_the_ctl_language(msa500: MSA500) -> None:
    host = msa500.initiator(1)
    host.write(1, 8, b"\xa5" * 4096)
    since = msa500.last_event_id()
    msa500.fail_drive(2)
    assert msa500.disk(2)["state"] == "failed"
    assert msa500.unit(1)["state"] != "ok"
    assert host.read(1, 8, 8) == b"\xa5" * 4096  # the mirror still reads
    event = msa500.wait_for_event("DRIVE_FAILED", since=since, timeout=5)
    assert event["bay"] == 2
    assert all(e["id"] > since for e in msa500.events(since))
    msa500.pull_drive(2)
    msa500.insert_drive(2)
    with pytest.raises(CtlError, match="DISK15"):
        msa500.fail_drive(15)


def test_rso_commands_from_the_wrong_moment_raise_scsi_errors(msa500: MSA500) -> None:
    with pytest.raises(ScsiError) as err:
        msa500.heartbeat()  # RSO not enabled: COMMAND SEQUENCE ERROR
    assert err.value.sense_key == 0x05 and err.value.asc_ascq == (0x2C, 0x00)
    assert "HEARTBEAT (C0h) from port 1" in str(err.value)


def test_heartbeats_hold_then_the_recovery_takes_over(msa500: MSA500) -> None:
    msa500.rso_enable(timeout=1, act_alone=False)
    assert msa500.acknowledge().secondary_joined  # the recovery joins from port 2
    with msa500.heartbeating(interval=0.2, acknowledge=True) as beat:
        time.sleep(1.5)  # longer than the timeout: the heartbeats hold port 1
        assert msa500.rso_status()["state"] == "ok"
    assert beat.count >= 3 and not beat.errors
    # No more heartbeats: the monitor sees TAKE_OVER and sends FORCE FAILOVER.
    st = msa500.wait_for_failover(timeout=10, as_recovery=True)
    assert st["state"] == "secondaryRunningAuto" and st["fenced_port"] == 1
    assert msa500.heartbeat().failed_over  # a fenced primary's heartbeat reaches nobody
    restored = msa500.rso_restore()  # logs out the handle's recovery session first
    assert restored["fenced_port"] in (0, None)
    codes = [e["code"] for e in msa500.events()]
    assert {"RSO_TIMEOUT", "RSO_FAILOVER", "RSO_RESTORED"} <= set(codes)


def test_a_cut_link_fails_over_although_the_primary_heartbeats(msa500: MSA500) -> None:
    msa500.rso_enable(timeout=1, act_alone=True)
    msa500.link_down(2)  # the recovery no longer hears the heartbeats
    with msa500.heartbeating(interval=0.2):
        st = msa500.wait_for_failover(timeout=10)
    assert st["failed_over"] == "auto"
    r = msa500.initiator(1).test_unit_ready(1)
    assert r.status == 2 and r.asc_ascq == (0x04, 0x0C)


def test_waits_time_out_as_failed_assertions(msa500: MSA500) -> None:
    msa500.rso_enable(timeout=60)
    with pytest.raises(WaitTimeout, match=r"RSO failover not reached within 0\.3 s") as err:
        msa500.wait_for_failover(timeout=0.3)
    assert isinstance(err.value, AssertionError) and isinstance(err.value, TimeoutError)
    assert "noSecondary" in str(err.value)
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match="never"):
        msa500.wait_for(lambda: False, timeout=0.2, message="never")
    assert time.monotonic() - t < 2
    assert msa500.wait_for(lambda: 42, timeout=0.1) == 42


def test_power_cycle_and_the_role_sessions_log_in_again(msa500: MSA500) -> None:
    msa500.rso_enable(timeout=30)
    assert msa500.heartbeat().enabled
    msa500.power_off()
    with pytest.raises(OSError):
        msa500.heartbeat()  # nobody listens while the shelf is off
    msa500.power_on()
    assert msa500.heartbeat().enabled  # a new session on port 1
    msa500.battery("fail")
    msa500.battery("restore")


def test_restart_keeps_the_shelf_and_the_ports(msa500: MSA500) -> None:
    msa500.initiator(1).write(1, 0, b"\x77" * 512)
    before = msa500.portals
    msa500.restart()
    assert msa500.alive and msa500.portals == before
    assert msa500.initiator(1).read(1, 0, 1) == b"\x77" * 512
    assert msa500.stop() == 0 and not msa500.alive
    assert msa500.stop() == 0  # idempotent


def test_the_factory_starts_independent_arrays(msa500_factory: ArrayFactory) -> None:
    a = msa500_factory(SHELF)
    b = msa500_factory(SHELF.replace("UNITPLUG01", "UNITPLUG02"), name="second")
    assert a.state_dir.name == "msa500-1" and b.state_dir.name == "second"
    assert len({a.port1, a.port2, b.port1, b.port2}) == 4
    b.fail_drive(1)
    assert a.disk(1)["state"] == "ok"
    # Each in-process array logs to its own file.
    assert "UNITPLUG01" in a.log.read_text() and "UNITPLUG02" not in a.log.read_text()
    assert "UNITPLUG02" in b.log.read_text()
    with pytest.raises(ValueError, match="running already"):
        msa500_factory(SHELF, name="second")


def test_a_bad_shelf_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(StartError, match=r"shelf\.drive_size"):
        start_array(tmp_path / "st", '[shelf]\ndrive_size = "lots"\n', mode="inprocess")
    with pytest.raises(ValueError, match="mode 'docker'"):
        start_array(tmp_path / "st", mode="docker")


def test_start_array_without_pytest_is_a_context_manager(tmp_path: Path) -> None:
    with start_array(tmp_path / "st", SHELF, mode="inprocess") as arr:
        assert arr.rso_status()["state"] == "notConfigured"
        emulator_serial = arr.call(lambda: arr.emulator.shelf.identity.serial)  # type: ignore[union-attr]
        assert emulator_serial == "UNITPLUG01"
    assert not arr.alive
