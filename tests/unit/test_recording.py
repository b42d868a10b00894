"""The recording format and the recorder, without a network: the process's hooks on an in-process
shelf (VirtualEmulator), the reader's refusals of a broken file, and the TOML a recording carries
building the same shelf again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_model.clock import VirtualClock
from firmware_model.controller import Controller
from firmware_model.scsi.types import DataDirection, Nexus, ScsiRequest, ScsiResult, Status
from msa500_emu.config import load
from msa500_emu.management import commands
from msa500_emu.management.grammar import CommandError
from msa500_emu.recording import format as fmt
from msa500_emu.recording import recorder
from msa500_emu.recording.state import REPLAY_NOP_S, config_toml, differences, facts, replay_config, rso_facts
from msa500_emu.scenario.targets import VirtualEmulator

HOST = Nexus("iqn.2026-12.unit:host,i,0x800000000009", 1)


def cdb16(op: int, lba: int, blocks: int) -> bytes:
    return bytes([op, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[VirtualEmulator]:
    """The built-in default shelf in-process, on a virtual clock, its events told to the recorder."""
    settings = load(None, {"state_dir": str(tmp_path / "state")})
    em = VirtualEmulator(settings)
    em.shelf = Controller(settings.state_dir, settings.shelf, VirtualClock(100.0),
                          on_event=lambda e: em.recorder.event(e) if em.recorder is not None else None)
    yield em
    em.shelf.close()


def execute(em: VirtualEmulator, cdb: bytes, data: bytes = b"", length: int = 0) -> ScsiResult:
    assert em.shelf is not None
    direction = DataDirection.WRITE if data else DataDirection.READ if length else DataDirection.NONE
    res = em.shelf.target.execute(ScsiRequest(HOST, 1, cdb, data, len(data) or length, direction))
    for _ in range(4):  # the new nexus's unit attentions first
        if res.status != Status.CHECK_CONDITION:
            break
        res = em.shelf.target.execute(ScsiRequest(HOST, 1, cdb, data, len(data) or length, direction))
    return res


def lines(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    raw = path.read_text().splitlines()
    return json.loads(raw[0]), [json.loads(x) for x in raw[1:]]


def test_a_recording_holds_commands_operations_and_events_but_not_views(emulator: VirtualEmulator,
                                                                        tmp_path: Path) -> None:
    st = commands.run(emulator, "RECORD START run.jsonl").result
    path = Path(st["file"])
    assert st["recording"] and emulator.shelf is not None and emulator.shelf.target.observer is not None
    assert execute(emulator, cdb16(0x8A, 0, 8), b"\x5a" * 4096).status == Status.GOOD
    read = execute(emulator, cdb16(0x88, 0, 8), length=512)  # the host wants 512 of the 4096 bytes
    commands.run(emulator, "SHOW UNITS")
    commands.run(emulator, "FAULT DISK2 FAIL")
    with pytest.raises(CommandError):
        commands.run(emulator, "FAULT DISK2 FAIL")  # refused: recorded with its error
    summary = commands.run(emulator, "RECORD STOP").result
    assert emulator.recorder is None and emulator.shelf.target.observer is None
    head, recs = lines(path)
    assert head["format"] == fmt.FORMAT and head["version"] == fmt.VERSION and head["state"]["units"]
    assert [r["n"] for r in recs] == list(range(1, len(recs) + 1)) and summary["records"] == len(recs)
    scsi = [r for r in recs if r["type"] == "scsi"]
    assert {(r["initiator"], r["isid"], r["port"]) for r in scsi} == {("iqn.2026-12.unit:host", "0x800000000009", 1)}
    write = next(r for r in scsi if r["dir"] == "write" and r["status"] == 0)
    assert write["out"] == {**fmt.digest(b"\x5a" * 4096), "data": fmt.encode_data(b"\x5a" * 4096)}
    last = scsi[-1]
    assert last["in"] == fmt.digest(bytes(read.data)[:512]) and last["in"]["len"] == 512
    ops = [(r["op"], r["error"] is None) for r in recs if r["type"] == "op"]
    assert ops == [("fault_disk", True), ("fault_disk", False)]
    assert any(r["type"] == "event" and r["bay"] == 2 for r in recs)
    assert recs[-1]["type"] == "end" and recs[-1]["commands"] == len(scsi)
    assert fmt.validate(path) == (head, len(scsi), True)


def test_data_out_beyond_the_cap_is_a_digest_and_a_note_says_where(emulator: VirtualEmulator,
                                                                   tmp_path: Path) -> None:
    path = Path(recorder.start(emulator, "cap.jsonl", 4096)["file"])
    execute(emulator, bytes(6))  # TEST UNIT READY: the new nexus's unit attentions first
    for fill in (1, 2, 3):
        execute(emulator, cdb16(0x8A, 8 * fill, 8), bytes([fill]) * 4096)
    st = recorder.stop(emulator)
    assert st["capped"] and st["data_kept_bytes"] == 4096
    _, recs = lines(path)
    outs = [r["out"] for r in recs if r["type"] == "scsi" and r["dir"] == "write" and r["status"] == 0]
    assert "data" in outs[0] and all("data" not in o and o["len"] == 4096 for o in outs[1:])
    assert sum(r["type"] == "note" for r in recs) == 1


def test_a_command_that_never_gets_an_answer_is_recorded_as_such(emulator: VirtualEmulator, tmp_path: Path) -> None:
    path = Path(recorder.start(emulator, "held.jsonl")["file"])
    execute(emulator, bytes(6))  # TEST UNIT READY: the new nexus's unit attentions go first
    commands.run(emulator, "INJECT UNIT 1 OP=READ ERROR=TIMEOUT")
    execute(emulator, cdb16(0x88, 0, 1), length=512)
    recorder.stop(emulator)
    _, recs = lines(path)
    last = [r for r in recs if r["type"] == "scsi"][-1]
    assert last["status"] is None and "in" not in last
    assert fmt.command(last).expected.text() == "no answer"


def test_start_refuses_a_second_recording_and_an_existing_file(emulator: VirtualEmulator, tmp_path: Path) -> None:
    for where in ("../up.jsonl", "/tmp/abs.jsonl", ".hidden", "a/b.jsonl"):  # the API picks no directory
        with pytest.raises(CommandError, match="is not a file name"):
            recorder.start(emulator, where)
    st = recorder.start(emulator, "relative.jsonl")
    assert Path(st["file"]) == emulator.settings.state_dir / recorder.RECORDINGS_DIR / "relative.jsonl"
    with pytest.raises(CommandError, match="already recording"):
        recorder.start(emulator, "other.jsonl")
    recorder.stop(emulator)
    with pytest.raises(CommandError, match="exists"):
        recorder.start(emulator, "relative.jsonl")
    with pytest.raises(CommandError, match="no recording runs"):
        recorder.stop(emulator)
    assert recorder.status(emulator) == {"recording": False}


def test_a_write_error_ends_the_recording_not_the_command(emulator: VirtualEmulator) -> None:
    rec = recorder.Recorder(Path("/dev/full"), open("/dev/full", "wb", buffering=0), 1 << 20)
    assert emulator.shelf is not None
    emulator.shelf.target.observer = rec.scsi
    assert execute(emulator, cdb16(0x8A, 0, 8), b"\x01" * 4096).status == Status.GOOD
    st = rec.status()
    assert not st["recording"] and "No space left" in str(st["error"])
    assert execute(emulator, cdb16(0x88, 0, 8), length=4096).status == Status.GOOD


def test_the_recorded_toml_builds_the_running_shelf_again(emulator: VirtualEmulator, tmp_path: Path) -> None:
    commands.run(emulator, 'ADD UNIT 3 DATA="DISK8-DISK10" RAID_LEVEL=5 SIZE=64MB NAME=logs')
    path = tmp_path / "shelf.toml"
    path.write_text(replay_config(config_toml(emulator)))
    settings = load(path, {"state_dir": str(tmp_path / "again")})
    assert settings.nop_interval == settings.nop_timeout == REPLAY_NOP_S  # the replay's array pings no idle session
    assert settings.cmd_window == emulator.settings.cmd_window
    again = Controller(settings.state_dir, settings.shelf, VirtualClock(100.0))
    try:
        assert emulator.shelf is not None
        assert facts(again.units()) == facts(emulator.shelf.units())
        assert [u["name"] for u in again.units()] == [u["name"] for u in emulator.shelf.units()]
        assert again.identity.target_name == emulator.shelf.identity.target_name
        recorded: dict[str, Any] = {"units": facts(emulator.shelf.units()), "rso": rso_facts(again.rso_status()),
                                    "powered": True}
        assert differences(recorded, again.units(), again.rso_status(), True) == []
        recorded["units"][0]["state"] = "failed"
        unit = recorded["units"][0]
        assert differences(recorded, again.units(), again.rso_status(), False) == [
            f"unit {unit['lun']}: recorded RAID {unit['raid']} {unit['size_bytes']} bytes failed, replay has "
            f"RAID {unit['raid']} {unit['size_bytes']} bytes ok", "power: recorded on, replay has off"]
    finally:
        again.close()


def good_file(tmp_path: Path) -> list[str]:
    head = fmt.header(emulator="0", started_at="2026-12-01T00:00:00Z", started_unix=0.0, data_cap=0,
                      config="", setup=[], state={})
    scsi = {"n": 1, "t": 0.0, "type": "scsi", "initiator": "iqn.x", "isid": "0x800000000001", "port": 1, "lun": 1,
            "cdb": "00" * 6, "dir": "none", "edtl": 0, "status": 0, "sense": ""}
    end = {"n": 2, "t": 0.1, "type": "end", "records": 2}
    return [json.dumps(r) + "\n" for r in (head, scsi, end)]


@pytest.mark.parametrize(("damage", "said"), [
    (lambda ls: [*ls[:2], ls[2][:-8]], "line 3: cut short"),
    (lambda ls: [*ls[:1], "{nope\n", *ls[2:]], "line 2: not JSON"),
    (lambda ls: [*ls[:1], ls[1].replace('"scsi"', '"pcap"'), *ls[2:]], "unknown record type 'pcap'"),
    (lambda ls: [*ls[:1], ls[1].replace('"lun": 1', '"lun": "one"'), *ls[2:]], "field lun missing or of the wrong"),
    (lambda ls: [*ls[:1], ls[1].replace('"cdb": "000000000000"', '"cdb": "0g"'), *ls[2:]], "bad field"),
    (lambda ls: [ls[0].replace('"version": 1', '"version": 2'), *ls[1:]], "format version 2; this emulator"),
    (lambda ls: ['{"format": "pcapng"}\n', *ls[1:]], "not a msa500-emu-recording file"),
    (lambda ls: ["PK\x03\x04 zip?\n"], "line 1 is not a JSON header"),
    (lambda ls: [], "empty file"),
    (lambda ls: [*ls, ls[1]], "after the end record"),
])
def test_a_broken_file_is_one_error_naming_the_line(tmp_path: Path, damage: Any, said: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(damage(good_file(tmp_path))))
    with pytest.raises(fmt.RecordingError, match=said) as caught:
        fmt.validate(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_the_good_file_reads_and_its_command_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(good_file(tmp_path)))
    head, n, ended = fmt.validate(path)
    assert (n, ended) == (1, True) and head["format"] == fmt.FORMAT
    _, records = fmt.read(path)
    cmd = fmt.command(next(records))
    assert cmd.cdb == bytes(6) and cmd.nexus == ("iqn.x", "0x800000000001", 1) and cmd.expected.status == 0


def test_sense_fields_read_fixed_and_descriptor_sense() -> None:
    assert fmt.sense_fields(bytes.fromhex("f0000300000000" + "0a00000000" + "1100" + "0000")) == (3, 0x11, 0)
    assert fmt.sense_fields(bytes.fromhex("72052400")) == (5, 0x24, 0)
    assert fmt.sense_fields(b"") == (0, 0, 0)
    assert fmt.split_nexus("iqn.a:b,i,0x80") == ("iqn.a:b", "0x80")
    assert fmt.toml_value(["empty", 3, True, 1.5]) == '["empty", 3, true, 1.5]'
