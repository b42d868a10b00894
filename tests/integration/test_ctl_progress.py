"""Progress you can watch, and a powered-off shelf that says so: `ctl WAIT UNIT`, `ctl SHOW UNITS
--watch`, `SHOW UNIT n`, the plugin's wait_for_unit_state, against a real emulator process.

The rebuild runs at MEDIUM priority (2 MiB every 0.1 s) on a 128 MiB unit, so it lasts a few
seconds and its percentages can be seen; at HIGH a rebuild of sparse drives ends before a poll.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msa500_emu.management.render import POWER_OFF_NOTE
from msa500_emu.testing import MSA500Error, RunningArray, WaitTimeout, start_array

from ..conftest import ROOT

pytestmark = pytest.mark.slow

SHELF = """
[shelf]
serial = "PROGRESS01"
drive_size = "256MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2]
spares = [3]
[[shelf.arrays]]
name = "B"
bays = [4]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
size = "128MiB"
[[shelf.logical_drives]]
lun = 2
array = "B"
raid = "0"
size = "32MiB"
"""


@pytest.fixture
def arr(tmp_path: Path) -> Iterator[RunningArray]:
    (tmp_path / "s.toml").write_text(SHELF)
    a = start_array(tmp_path / "st", tmp_path / "s.toml")
    try:
        a.ctl("SET GLOBALS REBUILD_PRIORITY=MEDIUM")
        yield a
    finally:
        assert a.stop() == 0, a.log_tail()


def ctl(arr: RunningArray, *words: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`msa500-emu ctl` as a user runs it, stdout a pipe (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, *words],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


def start_rebuild(arr: RunningArray) -> None:
    arr.fail_drive(1)  # the spare in bay 3 takes its slot and rebuilds


def test_wait_prints_a_line_per_step_and_exits_0_when_ok(arr: RunningArray) -> None:
    start_rebuild(arr)
    done = ctl(arr, "WAIT", "UNIT", "1", "STATE=ok", "TIMEOUT=120", "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [int(m.group(1)) for line in lines if (m := re.search(r"unit 1: REBUILDING (\d+)%$", line))]
    assert len(steps) >= 2 and steps == sorted(steps), done.stdout  # seen moving, never backwards
    assert len({s // 10 for s in steps}) == len(steps), "more than one line per 10 % step"
    assert re.search(r"unit 1: OK, reached after [\d.]+ s$", lines[-1]), lines[-1]
    assert "\x1b" not in done.stdout and "\r" not in done.stdout  # plain lines: no bar when not a terminal
    assert arr.unit(1)["state"] == "ok" and 3 in arr.unit(1)["bays"]


def test_wait_for_an_impossible_state_is_one_line_and_non_zero(arr: RunningArray) -> None:
    arr.fail_drive(4)  # unit 2 is RAID 0 on bay 4 alone: failed for good
    done = ctl(arr, "WAIT", "UNIT", "2", "STATE=ok", "TIMEOUT=5")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "unit 2 is FAILED" in done.stderr, done.stderr
    timed = ctl(arr, "WAIT", "UNIT", "1", "STATE=rebuilding", "TIMEOUT=1", "--interval", "0.2")
    assert timed.returncode == 4 and "not REBUILDING within 1 s (still OK)" in timed.stderr, timed.stderr
    assert timed.stderr.strip().count("\n") == 0
    for words, error in ((["WAIT", "UNIT", "9"], "unit 9 does not exist"),
                         (["WAIT", "UNIT", "1", "STATE=happy"], "STATE=happy not one of"),
                         (["WAIT", "UNIT", "1", "TIMEOUT=-3"], "TIMEOUT=-3 outside")):
        bad = ctl(arr, *words, "TIMEOUT=2" if "TIMEOUT=-3" not in words else "STATE=ok")
        assert bad.returncode == 1 and error in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_show_unit_n_and_show_units_watch_without_a_terminal(arr: RunningArray) -> None:
    one = ctl(arr, "SHOW", "UNIT", "1")
    assert one.returncode == 0 and one.stdout.startswith("Unit 1:"), one.stdout
    assert re.search(r"RAID Level:\s+RAID 1", one.stdout) and re.search(r"Data Disks:\s+DISK1-DISK2", one.stdout)
    missing = ctl(arr, "SHOW", "UNIT", "7")
    assert missing.returncode == 1 and "no unit 7 (units: 1, 2)" in missing.stderr
    start_rebuild(arr)
    watch = ctl(arr, "SHOW", "UNITS", "--watch", "--count", "12", "--interval", "0.3")
    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert lines[0].split()[:3] == ["Unit", "Name", "Array"]  # the table first, then what changed
    changes = [line for line in lines if re.search(r"\d\d:\d\d:\d\d\.\d{3}  unit \d: ", line)]
    assert changes and all(" unit 1: " in line for line in changes), watch.stdout
    assert "\x1b" not in watch.stdout
    bad = ctl(arr, "SHOW", "DISKS", "--watch", "--count", "1")
    assert bad.returncode == 1 and "--watch goes with SHOW UNITS" in bad.stderr
    stray = ctl(arr, "SHOW", "DISKS", "--count", "2")
    assert stray.returncode == 1 and "--count and --interval go with --watch or WAIT" in stray.stderr
    polls = ctl(arr, "--json", "SHOW", "UNITS", "--watch", "--count", "2", "--interval", "0.1")
    assert polls.returncode == 0 and [len(json.loads(x)) for x in polls.stdout.splitlines()] == [2, 2]
    answer = ctl(arr, "--json", "WAIT", "UNIT", "1", "TIMEOUT=120")
    body = json.loads(answer.stdout)
    assert answer.returncode == 0 and body["ok"] and body["result"]["state"] == "ok", answer.stdout


def run_in_pty(argv: list[str], timeout: float, interrupt_on: bytes | None = None) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdout (a user's terminal); its exit status and output.
    With `interrupt_on`, Ctrl-C (SIGINT) once the output has shown it twice (it is running)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT)
    os.close(slave)
    poller = select.poll()
    poller.register(master, select.POLLIN)
    out = b""
    end = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < end:
            if interrupt_on is not None and not sent and out.count(interrupt_on) >= 2:
                proc.send_signal(signal.SIGINT)
                sent = True
            if poller.poll(200):  # poll, not select: a long test run's descriptors pass FD_SETSIZE
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_in_a_terminal_wait_draws_a_bar_and_watch_ends_on_ctrl_c(arr: RunningArray) -> None:
    start_rebuild(arr)
    base = [sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api]
    rc, out = run_in_pty([*base, "WAIT", "UNIT", "1", "TIMEOUT=120", "--interval", "0.2"], 150)
    assert rc == 0, out
    assert "\r\x1b[K" in out and re.search(r"\[#+-*\] +\d+%", out), out[-2000:]  # redrawn in place
    assert "unit 1: OK, reached after" in out
    rc, out = run_in_pty([*base, "SHOW", "UNITS", "--watch", "--interval", "0.3"], 60, interrupt_on=b"Unit  Name")
    assert rc == 0, out
    assert "\x1b[H\x1b[J" in out and "Unit  Name" in out and "Traceback" not in out and "KeyboardInterrupt" not in out


def test_the_plugin_waits_for_a_unit_state(arr: RunningArray) -> None:
    start_rebuild(arr)
    unit = arr.wait_for_unit_state(1, "ok", timeout=120)
    assert unit["state"] == "ok" and unit["lun"] == 1
    with pytest.raises(WaitTimeout, match=r"unit 1 rebuilding not reached within 0.5 s \(unit 1 is OK\)"):
        arr.wait_for_unit_state(1, "rebuilding", timeout=0.5)
    arr.fail_drive(4)
    with pytest.raises(MSA500Error, match="unit 2 is FAILED"):
        arr.wait_for_unit_state(2, "ok", timeout=30)
    assert arr.wait_for_unit_state(2, "failed", timeout=5)["state"] == "failed"
    with pytest.raises(ValueError, match="STATE=asleep not one of"):
        arr.wait_for_unit_state(1, "asleep")


def test_a_powered_off_shelf_tells_the_truth(arr: RunningArray) -> None:
    since = arr.last_event_id()
    arr.power_off()
    assert arr.health()["status"] == "powered-off"
    g = arr.describe()
    assert g["powered"] is False and g["powered_off_at"] is not None
    globals_text = arr.ctl("SHOW GLOBALS", json=False)
    assert re.search(r"Shelf Power:\s+OFF since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", globals_text)
    assert re.search(r"Logical Drive 1:\s+128 MiB \(POWERED OFF\)", globals_text)
    assert re.search(r"Power Supply 1:\s+POWERED OFF", globals_text)
    disks = arr.ctl("SHOW DISKS", json=False)
    assert disks.splitlines()[0] == POWER_OFF_NOTE and not re.search(r"DISK1 .* OK ", disks)
    assert re.search(r"DISK1 +256 MiB +POWERED OFF +member", disks), disks
    assert all(d.get("powered") is False for d in arr.disks())
    assert ctl(arr, "SHOW", "UNIT", "1").stdout.splitlines()[0] == POWER_OFF_NOTE
    assert re.search(r"State:\s+POWERED OFF", arr.ctl("SHOW UNIT 1", json=False))
    waited = ctl(arr, "WAIT", "UNIT", "1", "STATE=powered-off", "TIMEOUT=5")
    assert waited.returncode == 0 and "unit 1: POWERED-OFF, reached" in waited.stdout
    not_ok = ctl(arr, "WAIT", "UNIT", "1", "STATE=ok", "TIMEOUT=1", "--interval", "0.2")
    assert not_ok.returncode == 4 and "(still POWERED OFF)" in not_ok.stderr
    arr.power_on()
    assert arr.wait_for_event("SHELF_POWER_ON", since=since, timeout=10)["code"] == "SHELF_POWER_ON"
    assert arr.health()["status"] == "ok" and arr.describe()["powered_off_at"] is None
    assert POWER_OFF_NOTE not in arr.ctl("SHOW DISKS", json=False)
    assert "powered" not in arr.disks()[0]
    assert arr.wait_for_unit_state(1, "ok", timeout=30)["powered"] is True
