"""Record a run over iSCSI (`serve --record`), replay it against a fresh array (`msa500-emu replay`).

The recorded run is what a bug report holds: two hosts writing and reading through both ports, a
drive failure with a spare taking over, an injected MEDIUM ERROR, and an RSO failover that fences
port 1. Its replay must match command for command; a tampered outcome, a different injection or a
broken file must be reported precisely (the record, the command, expected against got; exit 1 or 2).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.testing import start_array

from ..conftest import ROOT

pytestmark = pytest.mark.slow

SHELF = ('[shelf]\nserial = "RECORD001"\ndrive_size = "128MiB"\n'
         '[[shelf.arrays]]\nname = "A"\nbays = [1, 2]\nspares = [3]\n'
         '[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "1"\nsize = "16MiB"\n')
HOST_A, HOST_B = "iqn.2026-12.lab:host-a", "iqn.2026-12.lab:host-b"
MEDIUM_LBA = 64  # the block the injected MEDIUM ERROR answers
BLOCK = 512


def login(port: int, target: str, name: str, isid: bytes) -> Initiator:
    ini = Initiator("127.0.0.1", port, InitiatorConfig(initiator_name=name, isid=isid), timeout=30)
    ini.login(target)
    ini.clear_unit_attentions(1)
    return ini


def read16(lba: int, blocks: int) -> bytes:
    return bytes([0x88, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + bytes(2)


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "msa500_emu", "replay", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def records(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def write_records(path: Path, head: dict[str, Any], recs: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in [head, *recs]))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One recorded run (the array stopped, the file closed with its end record)."""
    d = tmp_path_factory.mktemp("recorded")
    path = d / "run.jsonl"
    arr = start_array(d / "state", SHELF, ["--record", str(path)])
    rng = random.Random(16)
    try:
        a = login(arr.port1, arr.target, HOST_A, b"\x80\x00\x00\x00\x00\x01")
        data = rng.randbytes(64 * BLOCK)
        for i in range(0, 64, 8):
            a.write(1, i, data[i * BLOCK:(i + 8) * BLOCK])
        assert a.read(1, 0, 64) == data
        arr.fail_drive(2)
        assert a.read(1, 0, 64) == data  # from the surviving mirror
        a.write(1, MEDIUM_LBA, rng.randbytes(8 * BLOCK))
        arr.ctl(f"INJECT UNIT 1 OP=READ LBA={MEDIUM_LBA}-{MEDIUM_LBA + 7} ERROR=MEDIUM")
        r = a.scsi(1, read16(MEDIUM_LBA, 8), read_len=8 * BLOCK)
        assert (r.status, r.sense_key, r.asc_ascq) == (2, 3, (0x11, 0))
        b = login(arr.port2, arr.target, HOST_B, b"\x80\x00\x00\x00\x00\x02")
        assert b.read(1, MEDIUM_LBA, 8)  # the injection fired once: the block reads again
        arr.ctl("RSO ENABLE")
        arr.ctl("RSO FAILOVER")
        fenced = a.scsi(1, read16(0, 8), read_len=8 * BLOCK)
        assert fenced.status == 2  # port 1 is fenced (after its unit attention, still not GOOD)
        for _ in range(4):
            r = b.scsi(1, read16(0, 64), read_len=64 * BLOCK)
            if r.status == 0:
                break
        assert r.status == 0 and r.data == data
        a.close()
        b.close()
    finally:
        assert arr.stop() == 0, arr.log_tail()
    yield path


def scsi_records(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"] == "scsi"]


def test_the_recording_holds_the_run(recorded: Path) -> None:
    head, recs = records(recorded)
    assert head["format"] == "msa500-emu-recording" and head["version"] == 1
    assert "[[shelf.logical_drives]]" in head["config"] and head["state"]["units"][0]["lun"] == 1
    ops = [(r["op"], r["args"]) for r in recs if r["type"] == "op"]
    assert ("fault_disk", {"bay": 2, "action": "fail"}) in ops
    assert any(op == "inject" and args["error"] == "medium" for op, args in ops)
    assert [op for op, _ in ops if op.startswith("rso_")] == ["rso_configure", "rso_failover"]
    codes = {r["code"] for r in recs if r["type"] == "event"}
    assert {"INJECTION_FIRED", "RSO_FAILOVER"} <= codes
    cmds = scsi_records(recs)
    assert {(c["initiator"], c["port"]) for c in cmds} == {(HOST_A, 1), (HOST_B, 2)}
    medium = [c for c in cmds if c["status"] == 2 and c["sense"][4:6] == "03"]
    assert len(medium) == 1 and medium[0]["cdb"] == read16(MEDIUM_LBA, 8).hex()
    writes = [c for c in cmds if c["dir"] == "write"]
    assert writes and all(c["out"]["data"] and c["out"]["len"] == c["edtl"] for c in writes)
    assert recs[-1]["type"] == "end" and recs[-1]["records"] == len(recs)
    assert [r["n"] for r in recs] == list(range(1, len(recs) + 1))


def test_a_replay_on_a_fresh_array_matches_every_command(recorded: Path) -> None:
    _, recs = records(recorded)
    done = replay(str(recorded))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(scsi_records(recs))} commands, all matched" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_tampered_outcome_is_the_first_divergence(recorded: Path, tmp_path: Path) -> None:
    head, recs = records(recorded)
    medium = next(r for r in scsi_records(recs) if r["status"] == 2 and r["sense"][4:6] == "03")
    medium.update(status=0, sense="", **{"in": {"len": 8 * BLOCK, "crc32c": "00000000"}})
    bad = tmp_path / "tampered.jsonl"
    write_records(bad, head, recs)
    done = replay(str(bad))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"First divergence at record {medium['n']} (" in out
    assert f"READ(16) LUN 1 LBA {MEDIUM_LBA}, 8 blocks, from {HOST_A} ISID 0x800000000001 via port 1" in out
    assert "expected: status 0x00, data-in 4096 bytes crc32c 00000000" in out
    assert "got:      status 0x02, sense 3/11/00" in out


def test_a_different_injection_diverges_where_its_error_comes(recorded: Path, tmp_path: Path) -> None:
    head, recs = records(recorded)
    inject = next(r for r in recs if r["type"] == "op" and r["op"] == "inject")
    inject["args"]["error"] = "hardware"
    medium = next(r for r in scsi_records(recs) if r["status"] == 2 and r["sense"][4:6] == "03")
    changed = tmp_path / "changed.jsonl"
    write_records(changed, head, recs)
    done = replay(str(changed))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"First divergence at record {medium['n']} (" in done.stdout
    assert "expected: status 0x02, sense 3/11/00" in done.stdout
    assert "got:      status 0x02, sense 4/" in done.stdout
    assert f"last operation before it: record {inject['n']} inject" in done.stdout


@pytest.mark.parametrize("damage", ["truncated", "garbled", "not-a-recording", "newer-version", "bad-field"])
def test_a_broken_file_is_one_line_and_exit_2(recorded: Path, tmp_path: Path, damage: str) -> None:
    text = recorded.read_text()
    lines = text.splitlines(keepends=True)
    broken = {
        "truncated": text[: len(text) - len(lines[-1]) - 17],
        "garbled": "".join([*lines[:5], '{"n": 5, "t": 0.1, "type": "scsi", "cdb": \n', *lines[6:]]),
        "not-a-recording": "[shelf]\nserial = \"X\"\n",
        "newer-version": text.replace('"version":1', '"version":7', 1),
        "bad-field": "".join([*lines[:3], lines[3].replace('"cdb":"', '"cdb":"zz', 1), *lines[4:]]),
    }[damage]
    path = tmp_path / "broken.jsonl"
    path.write_text(broken)
    done = replay(str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("msa500-emu replay: ") and str(path) in done.stderr


def test_replay_against_a_running_array_by_its_url(recorded: Path, tmp_path: Path) -> None:
    head, recs = records(recorded)
    arr = start_array(tmp_path / "fresh", head["config"], mode="inprocess")
    try:
        done = replay(str(recorded), "--api", arr.api, "--token-file", str(arr.token_file))
    finally:
        assert arr.stop() == 0
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(scsi_records(recs))} commands, all matched" in done.stdout


def test_record_start_stop_status_through_ctl(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "shelf", SHELF, mode="inprocess")
    try:
        assert arr.ctl("RECORD STATUS", json=False) == "Not recording."
        ini = login(arr.port1, arr.target, HOST_A, b"\x80\x00\x00\x00\x00\x03")  # known before the start:
        st = arr.ctl("RECORD START drill.jsonl DATA_CAP=1")  # the replay consumes its unit attentions first
        path = Path(st["file"])
        assert path == tmp_path / "shelf" / "recordings" / "drill.jsonl" and st["recording"]
        with pytest.raises(Exception, match="already recording"):
            arr.ctl("RECORD START other.jsonl")
        ini.write(1, 0, bytes(range(256)) * 2 * 2048)  # 1 MiB: the whole data cap
        ini.write(1, 2048, b"\x55" * 4096)  # beyond it: a digest only
        ini.close()
        arr.ctl("SHOW UNITS")  # a view: not recorded
        arr.ctl("FAULT DISK3 LATENCY 5")
        st = arr.ctl("RECORD STOP")
        assert not st["recording"] and st["capped"] and st["data_kept_bytes"] == 1 << 20
        with pytest.raises(Exception, match="exists"):
            arr.ctl("RECORD START drill.jsonl")
    finally:
        assert arr.stop() == 0
    head, recs = records(path)
    assert head["state"]["nexuses"] == [{"initiator": HOST_A, "isid": "0x800000000003", "port": 1}]
    assert [r["op"] for r in recs if r["type"] == "op"] == ["fault_disk"]
    notes = [r for r in recs if r["type"] == "note"]
    assert len(notes) == 1 and "data-out cap" in notes[0]["text"]
    writes = [r for r in scsi_records(recs) if r["dir"] == "write"]
    assert "data" in writes[0]["out"] and "data" not in writes[-1]["out"]
    assert writes[-1]["out"]["len"] == 4096
    done = replay(str(path))  # the write beyond the cap goes as zeros; data-in is no longer compared
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Data-in not compared from record {writes[-1]['n']} on" in done.stdout


def test_timers_replay_in_order_and_at_recorded_times(tmp_path: Path) -> None:
    """A command that never got an answer (injected TIMEOUT) and a timed power cut: the replay in
    order powers on at the recorded SHELF_POWER_ON; --at-recorded-times lets the array's own timer."""
    no_spin_up = SHELF + "[shelf.cache]\nspinup_s = 0\n"  # drives ready at power-on: no NOT READY polling
    arr = start_array(tmp_path / "shelf", no_spin_up, mode="inprocess")
    try:
        path = Path(arr.ctl("RECORD START timers.jsonl")["file"])
        isid = b"\x80\x00\x00\x00\x00\x04"
        ini = login(arr.port1, arr.target, HOST_A, isid)
        ini.write(1, 0, b"\x11" * 4096)
        arr.ctl("INJECT UNIT 1 OP=READ ERROR=TIMEOUT")
        ini.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            ini.scsi(1, read16(0, 8), read_len=4096)
        ini.close()
        arr.ctl("DELETE INJECTION ALL")
        since = arr.last_event_id()
        arr.ctl("FAULT SHELF POWER-OFF DURATION=1")
        arr.wait_for_event("SHELF_POWER_ON", since=since, timeout=30)
        for _ in range(100):  # the portals listen again a moment after power-on
            try:
                ini = login(arr.port1, arr.target, HOST_A, isid)
                break
            except OSError:
                time.sleep(0.1)
        ini.clear_unit_attentions(1)
        assert ini.read(1, 0, 8) == b"\x11" * 4096
        ini.close()
        arr.ctl("RECORD STOP")
    finally:
        assert arr.stop() == 0
    _, recs = records(path)
    assert any(r["type"] == "scsi" and r["status"] is None for r in recs)
    assert [r["args"] for r in recs if r["type"] == "op" and r["op"] == "power_off"] == [{"duration": 1}]
    for extra in ([], ["--at-recorded-times"]):
        done = replay(str(path), "--no-answer-wait", "1", *extra)
        assert done.returncode == 0, (extra, done.stdout + done.stderr)
        assert f"{len(scsi_records(recs))} commands, all matched" in done.stdout
