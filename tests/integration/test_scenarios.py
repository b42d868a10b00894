"""Every example scenario passes on the virtual clock (in-process) and on the wall clock (against a
real emulator process, through its API and portals), and a scenario that expects the wrong thing
fails with the row that says why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.scenario import load, loads, run_virtual
from msa500_emu.testing import MSA500Error
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))
IDS = [p.stem for p in EXAMPLES]
ROW = re.compile(r"^\s+\d+\.\d{3}s  \S")


def checks(result: Any) -> list[str]:
    return [r.what for r in result.rows if r.ok is not None]


# ------------------------------------------------------------------------------ virtual clock
@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_each_example_passes_on_the_virtual_clock(path: Path) -> None:
    result = run_virtual(path)
    assert result.ok, result.text()
    sc = load(path)
    expected = sum(len(s.expect_unit) + len(s.expect_rso) + len(s.expect_event) + len(s.expect_no_event)
                   + len(s.commands) + (s.after is not None) for s in sc.steps)
    assert len(checks(result)) == expected, result.text()  # every check ran, none was skipped


def test_the_virtual_clock_is_exact_and_runs_an_hour_at_once() -> None:
    """The primary's deadline: 2 s after its last heartbeat, to the millisecond; then an hour of
    heartbeats of the recovery-only shelf in one run (no wall-clock wait could do that in a test)."""
    result = run_virtual(ROOT / "examples" / "scenarios" / "primary-fails.toml")
    timeout = next(r for r in result.rows if r.what.startswith("after RSO_TIMEOUT"))
    assert timeout.time == pytest.approx(3.0 + 2.0, abs=0.5)  # last beat at 3.0 s (interval 0.5 s), timeout 2 s
    hour = loads(BLIND_HOUR, ROOT / "examples" / "scenarios" / "hour.toml")
    result = run_virtual(hour)
    assert result.ok, result.text()
    assert result.rows[-1].time == pytest.approx(3600.0)
    assert "RSO heartbeats is" not in result.text()  # only what the file asks is reported


def test_a_rebuild_at_low_priority_runs_to_its_end_on_the_virtual_clock() -> None:
    """32 MiB at LOW priority (1 MiB every 0.5 s): about 16 s of the controller's own timers, no hosts."""
    sc = loads('format = 1\nshelf = "shelves/mirror-spare.toml"\n'
               '[[step]]\nat = "0s"\ncommand = "FAULT DISK1 FAIL"\n'
               '[[step]]\nafter = "REBUILD_DONE"\nwithin = "1m"\nexpect_unit = {lun = 1, state = "ok"}\n',
               ROOT / "examples" / "scenarios" / "rebuild.toml")
    result = run_virtual(sc)
    assert result.ok, result.text()
    done = next(r for r in result.rows if r.what.startswith("after REBUILD_DONE"))
    assert 10.0 <= done.time <= 40.0, result.text()


BLIND_HOUR = """
format = 1
shelf = "shelves/mirror.toml"
[hosts]
interval = "1s"
[[step]]
at = "0s"
command = "RSO ENABLE TIMEOUT=3"
primary = "up"
recovery = "up"
[[step]]
at = "1h"
expect_rso = {state = "ok", failovers = 0}
expect_no_event = "RSO_TIMEOUT"
"""


def test_a_wrong_expectation_fails_and_says_what_was_there_instead() -> None:
    wrong = loads('format = 1\nshelf = "shelves/mirror.toml"\n'
                  '[[step]]\nat = "0s"\ncommand = "FAULT DISK1 FAIL"\n'
                  'expect_unit = {lun = 1, state = "ok"}\nexpect_no_event = "DRIVE_FAILED"\n'
                  '[[step]]\nafter = "REBUILD_STARTED"\nwithin = "5s"\n'
                  '[[step]]\ncommand = "FAULT DISK1 FAIL"\n', ROOT / "examples" / "scenarios" / "wrong.toml")
    result = run_virtual(wrong)
    assert not result.ok
    failed = [r.what for r in result.failures]
    assert failed == ["unit 1 is interim recovery, not ok", "event DRIVE_FAILED logged",
                      "after REBUILD_STARTED: not logged within 5s"], result.text()  # no spare: no rebuild
    assert result.rows[-1].step == "step 2"  # the run ended where its trigger never came
    assert "FAILED (3 of 4 checks)" in result.summary()


def test_the_virtual_shelf_runs_the_language_but_refuses_port_faults_in_one_line() -> None:
    sc = loads('format = 1\nshelf = "shelves/mirror.toml"\n'
               '[[step]]\nat = "0s"\n'
               'command = ["INJECT UNIT 1 OP=READ ERROR=MEDIUM", "FAULT SHELF POWER-OFF DURATION=5"]\n'
               'expect_unit = {lun = 1, state = "powered-off"}\n'
               '[[step]]\nafter = "SHELF_POWER_ON"\nwithin = "6s"\nexpect_unit = {lun = 1, state = "ok"}\n'
               '[[step]]\ncommand = "FAULT PORT1 DOWN"\n', ROOT / "examples" / "scenarios" / "ports.toml")
    result = run_virtual(sc)
    power_on = next(r for r in result.rows if r.what.startswith("after SHELF_POWER_ON"))
    assert power_on.time == pytest.approx(5.0)  # the timed power-on is a virtual deadline, exactly on time
    assert [r.what for r in result.failures] == [
        "FAULT PORT1 DOWN: refused: port and session faults need the iSCSI ports of a served array "
        "(run the scenario without --virtual-clock)"]


def scenario_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "msa500_emu", "scenario", "run", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_the_cli_runs_on_the_virtual_clock_and_prints_aligned_columns() -> None:
    p = scenario_cli("--virtual-clock", str(ROOT / "examples" / "scenarios" / "double-failure-during-rebuild.toml"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["TIME", "STEP", "WHAT", "HAPPENED", "RESULT"]
    rows = [line for line in lines if ROW.match(line)]
    assert len(rows) >= 6
    for line in rows:  # the step and what-happened columns start where the header's do
        assert line[header.index("STEP") - 1] == " " and line[header.index("STEP")] != " "
        assert line[header.index("WHAT") - 2: header.index("WHAT")] == "  " and line[header.index("WHAT")] != " "
    assert rows[-1].rstrip().endswith("OK") and "unit 1 is failed" in rows[-1]
    assert lines[-1].startswith("scenario double-failure-during-rebuild: passed")
    assert "{" not in p.stdout and "None" not in p.stdout


# ------------------------------------------------------------------------------ wall clock
@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=IDS)
def test_each_example_passes_on_the_wall_clock(path: Path, msa500_factory: Any) -> None:
    sc = load(path)
    array = msa500_factory(sc.shelf, name=path.stem)
    result = array.run_scenario(path)  # raises MSA500Error with the timeline when a check fails
    assert result.ok and not result.virtual
    assert [r.what for r in result.rows if r.ok is not None] == checks(run_virtual(path))


@pytest.mark.slow
def test_the_plugin_reports_a_failed_scenario_with_its_timeline(msa500_factory: Any) -> None:
    path = ROOT / "examples" / "scenarios" / "primary-fails.toml"
    array = msa500_factory(None)  # the built-in shelf, with no RSO yet: port 2 must first join
    array.ctl("RSO", "ENABLE", "TIMEOUT=2")
    array.rso_failover()  # already failed over: the first check cannot hold
    with pytest.raises(MSA500Error, match=r"(?s)failed:.*RSO state is secondaryRunningUser, not ok\s+FAIL"):
        array.run_scenario(path)


@pytest.mark.slow
def test_the_cli_runs_against_a_running_array(msa500_factory: Any) -> None:
    path = ROOT / "examples" / "scenarios" / "battery-then-power-cut.toml"
    array = msa500_factory(load(path).shelf, name="cli")
    assert array.token_file is not None
    p = scenario_cli(str(path), "--api", array.api, "--token-file", str(array.token_file))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no event CACHE_DATA_LOST" in p.stdout and "on the wall clock" in p.stdout
    again = scenario_cli(str(path), "--api", array.api, "--token-file", str(array.token_file))
    assert again.returncode == 1 and "FAULT BATTERY FAIL: refused: the battery is already failed" in again.stdout
