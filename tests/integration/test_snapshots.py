"""Snapshots of the whole shelf and RESET, through the command language and a real iSCSI session.

What they pin: a restore brings back every byte of a unit (whole-unit digest), the drives' and
units' states, RSO, the host connections and the set of LUNs; a session logged in across the
restore sees 29/00 at its next command, then 3F/0E when the LUNs differ, and nothing else;
RESET is the state right after start (path faults and injections gone too); a restore during a
rebuild; the copies stay sparse; every refusal is one line; the plugin's reset option.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.iscsi.initiator import Initiator
from msa500_emu.management.auth import find_token
from msa500_emu.snapshot import shelf as shelf_room
from msa500_emu.snapshot.files import can_reflink
from msa500_emu.snapshot.store import SNAPSHOTS_DIR
from msa500_emu.testing import CtlError, InProcessArray, start_array

from .test_plugin import run_pytest

SHELF = """
[shelf]
serial = "SNAPSHOT01"
drive_size = "64MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2, 3]
spares = [4]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "5"
size = "16MiB"
[shelf.cache]
spinup_s = 0
"""
UNIT_BLOCKS = 16 << 11  # 16 MiB in 512-byte blocks
CHUNK = 2048  # blocks per READ/WRITE: 1 MiB
UA = 2, 0x06  # CHECK CONDITION, UNIT ATTENTION


@pytest.fixture
def arr(tmp_path: Path) -> Iterator[InProcessArray]:
    (tmp_path / "s.toml").write_text(SHELF)
    a = start_array(tmp_path / "st", tmp_path / "s.toml", mode="inprocess")
    yield a
    assert a.stop() == 0, a.log_tail()
    assert "Traceback" not in a.log.read_text(), a.log_tail(80)


def digest(ini: Initiator, lun: int = 1, blocks: int = UNIT_BLOCKS) -> str:
    h = hashlib.sha256()
    for lba in range(0, blocks, CHUNK):
        h.update(ini.read(lun, lba, min(CHUNK, blocks - lba)))
    return h.hexdigest()


def scribble(ini: Initiator, seed: int, lun: int = 1) -> None:
    """Random data over the first half of the unit and a few blocks near its end."""
    rnd = random.Random(seed)
    for lba in range(0, UNIT_BLOCKS // 2, CHUNK):
        ini.write(lun, lba, rnd.randbytes(CHUNK * 512))
    ini.write(lun, UNIT_BLOCKS - 64, rnd.randbytes(64 * 512))


def shelf_state(a: InProcessArray) -> dict[str, Any]:
    """What a restore must bring back, without counters that move by themselves."""
    units = [{k: u.get(k) for k in ("lun", "state", "raid", "bays", "size_bytes", "spares")} for u in a.units()]
    disks = [{k: d.get(k) for k in ("bay", "state", "serial", "role", "array")} for d in a.disks()]
    rso = a.rso_status()
    conns = a.ctl("SHOW", "CONNECTIONS")["connections"]
    return {"units": units, "disks": disks, "rso": (rso.get("state"), rso.get("enabled")), "connections": conns}


def ua_codes(ini: Initiator, lun: int, limit: int = 5) -> list[tuple[int, int]]:
    """TEST UNIT READY until GOOD: the unit attentions it reported on the way, in order."""
    seen: list[tuple[int, int]] = []
    for _ in range(limit):
        r = ini.test_unit_ready(lun)
        if (r.status, r.sense_key) != UA:
            assert r.status == 0, (r.status, r.sense.hex())
            return seen
        seen.append(r.asc_ascq)
    raise AssertionError(f"still unit attentions after {limit}: {seen}")


def test_restore_brings_back_data_states_rso_config_and_tells_the_session(arr: InProcessArray) -> None:
    ini = arr.initiator(1)
    scribble(ini, 1)
    before_digest = digest(ini)
    before = shelf_state(arr)
    saved = arr.snapshot_save("before")
    assert saved["name"] == "before" and saved["files"] >= 5
    last_id = arr.last_event_id()
    assert arr.events(last_id - 1)[0]["code"] == "SNAPSHOT_SAVED"
    # change everything a snapshot holds: data, configuration, host connections, RSO, a drive
    scribble(ini, 2)
    assert digest(ini) != before_digest
    arr.ctl("ADD UNIT 2 ARRAY=A RAID_LEVEL=5 SIZE=4MB")
    arr.ctl("ADD CONNECTION web IQN=iqn.2026-12.lab:web")
    arr.rso_enable(timeout=30)
    arr.ctl("SET ALERTS SYSLOG=127.0.0.1:16514")  # alerts.json, a state file of the process
    arr.fail_drive(2)
    assert arr.disk(2)["state"] == "failed" and shelf_state(arr) != before
    out = arr.snapshot_restore("before")
    assert out["luns_changed"] is True and out["sessions"] == 1
    # the session stayed logged in: a reset first, then the LUN inventory change, on every LUN
    assert ua_codes(ini, 1) == [(0x29, 0x00), (0x3F, 0x0E)]
    assert ua_codes(ini, 0) == [(0x29, 0x00), (0x3F, 0x0E)]
    assert digest(ini) == before_digest
    assert shelf_state(arr) == before
    assert [u["lun"] for u in arr.units()] == [1]
    assert arr.ctl("SHOW ALERTS")["syslog"] == []  # alerts.json went: the defaults again
    restored = [e for e in arr.events(last_id) if e["code"] == "SNAPSHOT_RESTORED"]
    assert len(restored) == 1 and restored[0]["id"] > last_id  # ids never go back
    # the log is the snapshot's (its SNAPSHOT_SAVED came after the copy), with the restore after it
    assert arr.events(last_id)[0]["code"] == "SNAPSHOT_RESTORED"


def test_a_restore_during_a_rebuild_and_of_a_snapshot_taken_during_one(arr: InProcessArray) -> None:
    ini = arr.initiator(1)
    scribble(ini, 3)
    want = digest(ini)
    arr.ctl("SET GLOBALS REBUILD_PRIORITY=LOW")
    arr.snapshot_save("clean")
    arr.fail_drive(1)
    arr.wait_for_unit_state(1, "rebuilding", timeout=30)
    arr.snapshot_save("mid-rebuild")
    arr.snapshot_restore("clean")  # while the rebuild runs
    assert ua_codes(ini, 1) == [(0x29, 0x00)]  # the same LUNs: no 3F/0E
    assert arr.unit(1)["state"] == "ok" and arr.disk(1)["state"] == "ok" and arr.disk(4)["state"] == "spare"
    since = arr.last_event_id()
    assert digest(ini) == want
    assert not [e for e in arr.events(since) if e["code"].startswith("REBUILD")], "the old rebuild went on"
    arr.snapshot_restore("mid-rebuild")  # the rebuild picks up where the snapshot left it
    assert ua_codes(ini, 1) == [(0x29, 0x00)]
    assert arr.disk(1)["state"] == "failed"
    arr.ctl("SET GLOBALS REBUILD_PRIORITY=HIGH")
    arr.wait_for_unit_state(1, "ok", timeout=120)
    assert digest(ini) == want


def test_a_snapshot_of_a_powered_off_shelf_keeps_its_cache_and_comes_back_powered(arr: InProcessArray) -> None:
    """The cache file is taken as it is: what the battery holds is replayed when the snapshot opens."""
    ini = arr.initiator(1)
    data = os.urandom(2 << 20)
    ini.write(1, 4096, data)
    arr.power_off()
    told = re.search(r"(\d+) bytes of unwritten", arr.events()[-1]["message"])
    assert told is not None
    held = int(told.group(1))
    arr.snapshot_save("off")
    arr.power_on()
    arr.wait_for(lambda: arr.health()["status"] == "ok", 30)
    ini = arr.initiator(1)
    ini.write(1, 4096, bytes(len(data)))
    since = arr.last_event_id()
    arr.snapshot_restore("off")
    assert arr.health() == {"status": "ok", "powered": True}
    ini = arr.initiator(1)  # the portals listen again
    assert ini.read(1, 4096, len(data) // 512) == data
    if held:  # the destage had not begun when the power went (it waits 50 ms): the replay wrote it
        assert any(e["code"] == "CACHE_REPLAYED" for e in arr.events(since))


def test_reset_brings_back_the_state_right_after_start(arr: InProcessArray) -> None:
    start = shelf_state(arr)
    ini = arr.initiator(1)
    at_start = digest(ini)
    scribble(ini, 4)
    arr.ctl("ADD UNIT 2 ARRAY=A RAID_LEVEL=0 SIZE=4MB")
    arr.fail_drive(3)
    arr.inject(1, "READ", "MEDIUM", lba=(0, 7), count=None)
    arr.port_fault(2, "DOWN")
    arr.snapshot_save("dirty")
    out = arr.reset()
    assert out["name"] is None and out["luns_changed"] is True
    assert ua_codes(ini, 1) == [(0x29, 0x00), (0x3F, 0x0E)]
    assert shelf_state(arr) == start
    assert digest(ini) == at_start  # the injection went with the reset, or this read would fail
    assert arr.injections() == [] and arr.ctl("SHOW", "FAULTS") == []
    arr.initiator(2).close()  # port 2 listens again
    assert [s["name"] for s in arr.snapshots()] == ["dirty"]  # RESET keeps the named snapshots
    assert any(e["code"] == "SHELF_RESET" for e in arr.events())


def test_no_snapshot_at_start_when_it_would_copy_too_much(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without reflinks a shelf full of data is not copied at every start: RESET says why it cannot run."""
    monkeypatch.setattr(shelf_room, "START_COPY_MAX", 0)  # any data at all is too much
    arr = start_array(tmp_path / "st", mode="inprocess")
    try:
        if can_reflink(tmp_path / "st" / SNAPSHOTS_DIR):
            assert arr.reset()["name"] is None  # reflinks cost nothing: taken anyway
            return
        with pytest.raises(CtlError, match=r"RESET is not available: the shelf holds 0\.0 GiB of data and its file "
                                           r"system has no reflinks.*SNAPSHOT SAVE name takes one by hand$"):
            arr.reset()
        assert "no snapshot at start" in arr.log.read_text()
        assert arr.snapshot_save("by-hand")["name"] == "by-hand"
    finally:
        assert arr.stop() == 0


def test_copies_stay_sparse_and_the_manifest_says_what_they_hold(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "st", mode="inprocess")  # the default shelf: ten 36 GiB drives
    try:
        ini = arr.initiator(1)
        ini.write(1, 1 << 20, os.urandom(1 << 20))
        row = arr.snapshot_save("big")
        snap = tmp_path / "st" / SNAPSHOTS_DIR / "big"
        manifest = json.loads((snap / "manifest.json").read_text())
        assert manifest["format"] == 1 and manifest["name"] == "big" and manifest["serial"]
        names = {f["name"] for f in manifest["files"]}
        assert {"bay01.img", "bay10.img", "controller-nvram.json", "cache.nvram", "events.jsonl"} <= names
        assert not names & {"api.token", "msa500-emu.lock"}
        apparent = 0
        for f in manifest["files"]:
            st = (snap / f["name"]).stat()
            src = (tmp_path / "st" / f["name"]).stat()
            assert st.st_size == f["size"] and st.st_blocks * 512 == f["stored"]
            if f["name"].endswith(".img"):  # holes stayed holes: never more blocks than the original
                assert st.st_size == src.st_size and st.st_blocks <= src.st_blocks, f["name"]
            apparent += st.st_size
        assert apparent > 300 << 30 and row["stored_bytes"] < 16 << 20
        text = arr.ctl("SNAPSHOT LIST", json=False)
        head, line = text.splitlines()
        taken = re.search(r"\d{4}-\d\d-\d\d", line)
        assert taken is not None and head.index("TAKEN") == taken.start()  # aligned columns
        assert head.index("COPY") == line.index("sparse" if "sparse" in line else "reflink")
        assert re.match(r"^NAME\s+TAKEN\s+FILES\s+SIZE \(MiB\)\s+COPY$", head)
        assert re.match(r"^big\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+\s+\d+\.\d\s+(sparse|reflink)$", line)
    finally:
        assert arr.stop() == 0


def post(arr: InProcessArray, line: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(arr.api + "/api/command", data=json.dumps({"command": line}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    req.add_header("Authorization", f"Bearer {find_token(req.full_url)}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_refusals_are_one_line_and_save_never_overwrites(arr: InProcessArray) -> None:
    first = arr.snapshot_save("base")
    cases = {
        "SNAPSHOT SAVE base": "exists",  # taken: refused, the old one stays
        "SNAPSHOT RESTORE nope": "no snapshot 'nope'",
        "SNAPSHOT DELETE nope": "no snapshot 'nope'",
        "SNAPSHOT SAVE a/b": "snapshot name 'a/b'",
        "SNAPSHOT SAVE .start": "snapshot name '.start'",
        "SNAPSHOT SAVE ../x": "snapshot name '../x'",
        f"SNAPSHOT SAVE {'x' * 33}": "at most 32 characters",
        "SNAPSHOT SAVE": "usage: SNAPSHOT SAVE name",
        "SNAPSHOT": "usage:",
        "SNAPSHOT LIST all": "unexpected 'all'",
        "RESET now": "unexpected 'now'",
    }
    for line, want in cases.items():
        status, body = post(arr, line)
        assert status == 400 and body["ok"] is False, (line, body)
        assert want in body["error"] and "\n" not in body["error"], (line, body["error"])
    assert arr.snapshots() == [first]
    other = arr.state_dir / SNAPSHOTS_DIR / "other"  # a snapshot directory copied from another array
    shutil.copytree(arr.state_dir / SNAPSHOTS_DIR / "base", other)
    raw = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**raw, "name": "other", "serial": "ELSEWHERE1"}))
    status, body = post(arr, "SNAPSHOT RESTORE other")
    assert status == 400 and body["error"] == "snapshot 'other' is of shelf ELSEWHERE1, this is SNAPSHOT01"
    arr.snapshot_delete("other")
    arr.snapshot_delete("base")
    assert arr.snapshots() == []
    with pytest.raises(CtlError, match="no snapshot 'base'"):
        arr.snapshot_restore("base")
    assert "No snapshots" in arr.ctl("SNAPSHOT LIST", json=False)


@pytest.mark.slow
def test_the_plugin_resets_the_shared_array_when_asked(tmp_path: Path) -> None:
    project = tmp_path / "user-ci"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nmsa500_mode = inprocess\nmsa500_shared_reset = true\n")
    (project / "test_shared.py").write_text('''
import pytest

def conns(a):
    return [c["name"] for c in a.ctl("SHOW CONNECTIONS")["connections"]]

def test_1_dirties(msa500_shared):
    msa500_shared.ctl("ADD CONNECTION web IQN=iqn.2026-12.lab:web")
    msa500_shared.psu(1, "fail")
    assert conns(msa500_shared) == ["web"]

def test_2_finds_it_clean(msa500_shared):
    assert conns(msa500_shared) == []
    assert all(e["code"] != "PSU_FAILED" for e in msa500_shared.events(msa500_shared.last_event_id() - 3))
    msa500_shared.ctl("ADD CONNECTION db IQN=iqn.2026-12.lab:db")

@pytest.mark.msa500_reset(False)
def test_3_opts_out(msa500_shared):
    assert conns(msa500_shared) == ["db"]
''')
    out = run_pytest(project, "-q", "test_shared.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout
