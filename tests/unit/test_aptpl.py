"""APTPL (SPC-4 5.14.5): registrations and the reservation come back exactly after a restart, a kill
and a shelf power cycle when the last REGISTER said APTPL=1; without it they are gone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from firmware_model.controller import Controller, ShelfError
from firmware_model.controller.pr_store import PR_FILE
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from tests.unit.shelf_helpers import Clocked, run_idle, sense

A = Nexus("iqn.2026-01.test:node-a,i,0x23d000000001", 1)
B = Nexus("iqn.2026-01.test:node-b,i,0x23d000000002", 2)
REGISTER, RESERVE, REG_IGNORE = 0, 1, 6
WE = 0x1
POWER_ON = (0x6, 0x29, 0x00)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


def cmd(c: Controller, nexus: Nexus, lun: int, cdb: bytes, data: bytes = b"") -> ScsiResult:
    return c.target.execute(ScsiRequest(nexus, lun, cdb, data, len(data)))


def prout(c: Controller, nexus: Nexus, sa: int, key: int = 0, sa_key: int = 0, *, aptpl: bool = False,
          pr_type: int = 0, lun: int = 1) -> ScsiResult:
    cdb = bytes((0x5F, sa, pr_type, 0, 0, 0, 0, 0, 24, 0))
    data = key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(4) + bytes((1 if aptpl else 0, 0, 0, 0))
    return cmd(c, nexus, lun, cdb, data)


def prin(c: Controller, nexus: Nexus, sa: int, lun: int = 1) -> bytes:
    res = cmd(c, nexus, lun, bytes((0x5E, sa, 0, 0, 0, 0, 0, 0x10, 0, 0)))
    assert res.status == Status.GOOD, sense(res)
    return bytes(res.data)


def keys(c: Controller, nexus: Nexus = A, lun: int = 1) -> tuple[int, list[int]]:
    """PRgeneration and the registered keys (READ KEYS)."""
    d = prin(c, nexus, 0, lun)
    gen, n = struct.unpack(">II", d[:8])
    return gen, [int.from_bytes(d[8 + i: 16 + i], "big") for i in range(0, n, 8)]


def reservation(c: Controller, nexus: Nexus = A, lun: int = 1) -> tuple[int, int] | None:
    """The reservation's key and type (READ RESERVATION), or None."""
    d = prin(c, nexus, 1, lun)
    if struct.unpack(">I", d[4:8])[0] == 0:
        return None
    return int.from_bytes(d[8:16], "big"), d[21] & 0x0F


def take_power_on(c: Controller, nexus: Nexus) -> None:
    """A host logging in after power on sees POWER ON, RESET (29/00) once per LUN, then nothing."""
    for lun in c.target.lun_list():
        assert sense(cmd(c, nexus, lun, bytes(6))) == POWER_ON, lun
        assert c.target.pending_unit_attentions(nexus, lun) == []


def power_cycle(c: Controller, env: Clocked) -> None:
    """FAULT SHELF POWER-OFF, POWER-ON, and the drives' spin-up on the virtual clock."""
    c.power_off()
    env.clock.advance(5)
    c.power_on()
    run_idle(c, env.clock)


def write(c: Controller, nexus: Nexus) -> ScsiResult:
    return cmd(c, nexus, 1, struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0), b"\x11" * 512)


def fenced(c: Controller, aptpl: bool = True) -> None:
    """Node A holds WRITE EXCLUSIVE on LUN 1; B is registered on port 2; LUN 2 has B alone."""
    take_power_on(c, A)
    take_power_on(c, B)
    assert prout(c, A, REGISTER, 0, 0xA1, aptpl=aptpl).status == Status.GOOD
    assert prout(c, B, REG_IGNORE, 0, 0xB2, aptpl=aptpl).status == Status.GOOD
    assert prout(c, A, RESERVE, 0xA1, pr_type=WE).status == Status.GOOD
    assert prout(c, B, REGISTER, 0, 0xB3, aptpl=aptpl, lun=2).status == Status.GOOD
    assert write(c, B).status == Status.RESERVATION_CONFLICT


def came_back(c: Controller) -> None:
    take_power_on(c, A)
    take_power_on(c, B)
    assert keys(c) == (0, [0xA1, 0xB2])  # PRgeneration restarts at power on
    assert reservation(c, B) == (0xA1, WE)
    assert keys(c, B, lun=2) == (0, [0xB3])
    assert write(c, B).status == Status.RESERVATION_CONFLICT  # the fence holds
    assert write(c, A).status == Status.GOOD
    caps = prin(c, A, 2)
    assert caps[2] & 0x01 and caps[3] & 0x01  # PTPL_C and PTPL_A


def gone(c: Controller) -> None:
    take_power_on(c, A)
    take_power_on(c, B)
    assert keys(c) == (0, [])
    assert reservation(c) is None
    assert keys(c, B, lun=2) == (0, [])
    assert write(c, B).status == Status.GOOD


# ------------------------------------------------------------------ survives
def test_aptpl_survives_close_and_reopen(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    c.close()
    again = env.open(tmp_path)
    came_back(again)
    again.close()


def test_aptpl_survives_a_kill(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    # Nothing is closed or flushed: the file was written (and fsynced) before each GOOD.
    saved = json.loads((tmp_path / PR_FILE).read_text())
    assert sorted(saved["units"]) == ["1", "2"]
    again = env.open(tmp_path)
    came_back(again)
    again.close()


def test_aptpl_survives_a_shelf_power_cycle(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    power_cycle(c, env)
    came_back(c)
    assert prout(c, A, REGISTER, 0xA1, 0xA9).status == Status.GOOD  # and it keeps working
    assert keys(c) == (1, [0xA9, 0xB2])
    c.close()


# ------------------------------------------------------------------ forgotten
def test_without_aptpl_a_power_cycle_and_a_restart_clear_them(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c, aptpl=False)
    assert not (tmp_path / PR_FILE).exists()
    power_cycle(c, env)
    gone(c)
    assert prout(c, A, REGISTER, 0, 0xA1).status == Status.GOOD
    c.close()
    again = env.open(tmp_path)
    gone(again)
    again.close()


def test_a_later_register_with_aptpl_0_ends_persistence(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    assert prout(c, A, REGISTER, 0xA1, 0xA2, aptpl=False).status == Status.GOOD  # LUN 1 only
    saved = json.loads((tmp_path / PR_FILE).read_text())
    assert sorted(saved["units"]) == ["2"]
    power_cycle(c, env)
    take_power_on(c, A)
    take_power_on(c, B)
    assert keys(c) == (0, [])
    assert keys(c, B, lun=2) == (0, [0xB3])
    c.close()


def test_unregistering_keeps_the_file_exact(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    assert prout(c, B, REGISTER, 0xB2, 0, aptpl=True).status == Status.GOOD  # B leaves LUN 1
    c.close()
    again = env.open(tmp_path)
    take_power_on(again, A)
    assert keys(again) == (0, [0xA1])
    assert reservation(again) == (0xA1, WE)
    again.close()


def test_a_deleted_unit_takes_its_reservations_with_it(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    c.delete_unit(2)
    assert sorted(json.loads((tmp_path / PR_FILE).read_text())["units"]) == ["1"]
    c.close()


# ------------------------------------------------------------------ a file that is not ours
@pytest.mark.parametrize(("text", "names"), [
    ("{not json", "persistent-reservations.json"),
    ('{"format": 9, "units": {}}', "not format 1"),
    ('{"format": 1, "units": {"1": {"serial": "X", "state": {"aptpl": true, "registrations": '
     '[{"initiator": "iqn.x,i,0x1", "port": 1, "key": "zz"}]}}}}', "units.1.state.registrations[0].key"),
    ('{"format": 1, "units": {"1": {"serial": "X", "state": {"aptpl": true, "registrations": [], '
     '"reservation": {"type": 2}}}}}', "units.1.state.reservation.type"),
    ('{"format": 1, "units": {"x": {}}}', "units.x: not a LUN"),
])
def test_a_bad_file_refuses_the_start_with_one_line(env: Clocked, tmp_path: Path, text: str, names: str) -> None:
    env.open(tmp_path).close()
    (tmp_path / PR_FILE).write_text(text)
    with pytest.raises(ShelfError) as err:
        env.open(tmp_path)
    msg = str(err.value)
    assert names in msg and "\n" not in msg and "remove the file" in msg


def test_a_saved_state_of_another_shelf_is_ignored(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    fenced(c)
    c.close()
    path = tmp_path / PR_FILE
    data = json.loads(path.read_text())
    data["units"]["1"]["serial"] = "SOMEONEELSE"
    path.write_text(json.dumps(data))
    again = env.open(tmp_path)
    take_power_on(again, A)
    take_power_on(again, B)
    assert keys(again) == (0, [])
    assert keys(again, B, lun=2) == (0, [0xB3])
    again.close()


def test_a_register_that_cannot_be_kept_fails_and_changes_nothing(env: Clocked, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware_model.controller import pr_store

    c = env.open(tmp_path)
    take_power_on(c, A)
    assert prout(c, A, REGISTER, 0, 0xA1, aptpl=True).status == Status.GOOD

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pr_store, "_durable_write", full)
    refused = prout(c, A, REGISTER, 0xA1, 0xA2, aptpl=True)  # change the key: cannot be kept
    assert refused.status == Status.CHECK_CONDITION and sense(refused)[0] == 0x4, sense(refused)
    assert keys(c) == (1, [0xA1])  # nothing changed: the host may trust the failure
    monkeypatch.undo()
    c.close()
    c = env.open(tmp_path)
    take_power_on(c, A)
    assert keys(c) == (0, [0xA1])
