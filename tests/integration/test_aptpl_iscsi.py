"""APTPL over iSCSI against a real emulator process: keys registered with APTPL=1 come back after
SIGKILL and a restart on the same state directory, and after a shelf power cycle; a later
REGISTER with APTPL=0 lets the next restart forget them (SPC-4 5.14.5)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator
from msa500_emu.testing.launch import RunningArray, mirror_shelf

from ..conftest import start_array

pytestmark = pytest.mark.slow

REGISTER, RESERVE, REG_IGNORE = 0, 1, 6
WE = 0x1
NODE_A = "iqn.2026-12.test:node-a"
NODE_B = "iqn.2026-12.test:node-b"


def prout(ini: Initiator, sa: int, key: int = 0, sa_key: int = 0, *, aptpl: bool = False, pr_type: int = 0) -> int:
    cdb = bytes((0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0))
    data = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(4) + bytes((1 if aptpl else 0, 0, 0, 0))
    return ini.scsi(1, cdb, data=data).status


def read_keys(ini: Initiator) -> list[int]:
    r = ini.scsi(1, bytes((0x5E, 0, 0, 0, 0, 0, 0, 0x10, 0, 0)), read_len=0x1000)
    assert r.status == 0, r.sense.hex()
    n = struct.unpack(">I", r.data[4:8])[0]
    return [int.from_bytes(r.data[8 + i: 16 + i], "big") for i in range(0, n, 8)]


def read_reservation(ini: Initiator) -> tuple[int, int] | None:
    r = ini.scsi(1, bytes((0x5E, 1, 0, 0, 0, 0, 0, 0x10, 0, 0)), read_len=0x1000)
    assert r.status == 0, r.sense.hex()
    if struct.unpack(">I", r.data[4:8])[0] == 0:
        return None
    return int.from_bytes(r.data[8:16], "big"), r.data[21] & 0x0F


def write_status(ini: Initiator) -> int:
    return ini.scsi(1, struct.pack(">BBQIBB", 0x8A, 0, 0, 1, 0, 0), data=b"\x33" * 512).status


def wait_ready(arr: RunningArray, port: int, name: str) -> Initiator:
    """A new session once the drives answer (after power on they spin up first)."""
    deadline = time.monotonic() + 30
    while True:
        ini = arr.initiator(port, name)
        r = ini.clear_unit_attentions(1)
        if r.status == 0 or time.monotonic() > deadline:
            assert r.status == 0, r.sense.hex()
            return ini
        time.sleep(0.2)


@pytest.fixture
def arr(tmp_path: Path) -> Iterator[RunningArray]:
    a = start_array(tmp_path / "state", mirror_shelf(serial="APTPL0001"))
    yield a
    a.stop()


def test_aptpl_keys_survive_sigkill_and_power_cycle(arr: RunningArray) -> None:
    a = arr.initiator(1, NODE_A)
    b = arr.initiator(2, NODE_B)
    assert prout(a, REGISTER, 0, 0xA1, aptpl=True) == 0
    assert prout(b, REG_IGNORE, 0, 0xB2, aptpl=True) == 0
    assert prout(a, RESERVE, 0xA1, pr_type=WE) == 0
    assert read_keys(b) == [0xA1, 0xB2]
    assert write_status(b) == 0x18  # RESERVATION CONFLICT: B is fenced by A's reservation

    arr.kill()  # SIGKILL: nothing flushed, nothing closed
    arr.restart()
    reader = wait_ready(arr, 2, "iqn.2026-12.test:reader")
    assert read_keys(reader) == [0xA1, 0xB2]
    assert read_reservation(reader) == (0xA1, WE)
    assert write_status(reader) == 0x18  # the fence holds across the crash

    arr.power_off()  # FAULT SHELF POWER-OFF / POWER-ON
    arr.power_on()
    reader = wait_ready(arr, 1, "iqn.2026-12.test:reader2")
    assert read_keys(reader) == [0xA1, 0xB2]
    assert read_reservation(reader) == (0xA1, WE)


def test_without_aptpl_a_restart_forgets(arr: RunningArray) -> None:
    a = arr.initiator(1, NODE_A)
    assert prout(a, REGISTER, 0, 0xA1, aptpl=True) == 0
    assert prout(a, REGISTER, 0xA1, 0xA7, aptpl=False) == 0  # the last APTPL bit received is 0
    assert read_keys(a) == [0xA7]
    arr.kill()
    arr.restart()
    reader = wait_ready(arr, 1, "iqn.2026-12.test:reader")
    assert read_keys(reader) == []
    assert read_reservation(reader) is None
    assert write_status(reader) == 0
