"""Scenario files are read and checked whole before anything runs: every mistake is one line naming
the step and the key, the shipped examples are valid, and the CLI answers a bad file without a
traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from msa500_emu.scenario import FORMAT_VERSION, ScenarioError, load, loads, parse_duration
from msa500_emu.scenario.format import HOST_ROLES
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.toml"))
HEAD = 'format = 1\nname = "t"\n'


def test_the_examples_are_there_and_valid() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"primary-fails", "recovery-fails-primary-serves", "recovery-fails-primary-offline", "storage-fails",
            "blind-spot", "double-failure-during-rebuild", "battery-then-power-cut"} <= names
    for path in EXAMPLES:
        sc = load(path)
        assert sc.steps and sc.shelf is not None and sc.shelf.is_file(), path
        assert any(s.expects for s in sc.steps), f"{path} checks nothing"


def test_a_full_step_reads_as_written(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[shelf]\n")
    sc = loads(HEAD + 'shelf = "s.toml"\n[hosts]\ninterval = "250ms"\n'
               '[[step]]\nname = "go"\nat = "1.5s"\ncommand = ["RSO ENABLE TIMEOUT=2", "FAULT DISK3 FAIL"]\n'
               'primary = "up"\nrecovery = "DOWN"\n'
               '[[step]]\nafter = "rebuild_started"\nwithin = "2m"\n'
               'expect_unit = [{lun = 1, state = "interim-recovery"}, {lun = 2, state = "OK"}]\n'
               'expect_rso = {state = "ok", failovers = 0, take_over = false}\n'
               'expect_event = "DRIVE_FAILED"\nexpect_no_event = ["RSO_FAILOVER"]\n', tmp_path / "drill.toml")
    assert sc.interval == 0.25 and sc.shelf == tmp_path / "s.toml"
    first, second = sc.steps
    assert (first.label, first.at, first.commands) == ("go", 1.5, ("RSO ENABLE TIMEOUT=2", "FAULT DISK3 FAIL"))
    assert first.hosts == (("primary", "up"), ("recovery", "down"))
    assert second.label == "step 2" and second.after == "REBUILD_STARTED" and second.within == 120
    assert [(u.lun, u.state) for u in second.expect_unit] == [(1, "interim recovery"), (2, "ok")]
    assert dict(second.expect_rso) == {"state": "ok", "failovers": 0, "take_over": False}
    assert second.expect_event == ("DRIVE_FAILED",) and second.expect_no_event == ("RSO_FAILOVER",)


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("500ms", 0.5), ("2m", 120), ("1h", 3600),
                                               ("1.5s", 1.5), (3, 3), (0.25, 0.25), ("10", 10), ("0s", 0)])
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 parsecs", "-1s", "", True, [1], "1e3s"])
def test_bad_durations_are_one_line(bad: object) -> None:
    with pytest.raises(ScenarioError, match=r"^where: ") as err:
        parse_duration(bad, "where")
    assert "\n" not in str(err.value)


STEP = '[[step]]\nat = "0s"\n'


@pytest.mark.parametrize(("text", "words"), [
    ('name = "t"\n' + STEP, "format = 1 missing"),
    ('format = 2\n' + STEP, "format 2 unknown; this msa500-emu reads format 1"),
    ('format = true\n' + STEP, "format True unknown"),
    (HEAD + 'colour = "red"\n' + STEP, "unknown key 'colour'"),
    (HEAD, "no [[step]] tables"),
    (HEAD + "step = 3\n", "step: a list of [[step]] tables"),
    (HEAD + '[hosts]\ninterval = "1ms"\n' + STEP, "hosts.interval: at least 10ms"),
    (HEAD + '[hosts]\nrate = 3\n' + STEP, "hosts: unknown key 'rate'"),
    (HEAD + '[[step]]\nname = "x"\nat = "1s"\nwhen = "now"\n', "step 1 (x): unknown key 'when'"),
    (HEAD + '[[step]]\nat = "1s"\nafter = "DRIVE_FAILED"\n', "step 1: at and after: one or the other"),
    (HEAD + '[[step]]\nat = "soon"\n', "step 1: at: 'soon' is not a duration"),
    (HEAD + '[[step]]\nafter = "DRIVE_EXPLODED"\n', "step 1: after: \"DRIVE_EXPLODED\" is not an event code"),
    (HEAD + STEP + '[[step]]\nwithin = 5\ncommand = "FAULT DISK99 FAIL"\n',
     "step 2: command: 'FAULT DISK99 FAIL': DISK99 names bay 99; bays are 1-14"),
    (HEAD + STEP + '[[step]]\ncommand = "FLY AWAY"\n', "step 2: command: 'FLY AWAY': unknown command 'FLY'"),
    (HEAD + STEP + '[[step]]\ncommand = "RSO ENABLE TIMEOUT=99999"\n', "step 2: command: 'RSO ENABLE TIMEOUT=99999'"),
    (HEAD + STEP + '[[step]]\ncommand = 7\n', "step 2: command: a string or a list of strings, not a number"),
    (HEAD + '[[step]]\nprimary = "sideways"\n', "step 1: primary: \"up\" or \"down\", not \"sideways\""),
    (HEAD + '[[step]]\nexpect_unit = {lun = 1, state = "happy"}\n', "step 1: expect_unit: state: STATE=happy"),
    (HEAD + '[[step]]\nexpect_unit = {lun = 99, state = "ok"}\n', "step 1: expect_unit: lun: a unit number 1..32"),
    (HEAD + '[[step]]\nexpect_unit = {state = "ok"}\n', "step 1: expect_unit: lun: a unit number"),
    (HEAD + '[[step]]\nexpect_unit = {lun = 1}\n', "step 1: expect_unit: state missing"),
    (HEAD + '[[step]]\nexpect_unit = "ok"\n', "step 1: expect_unit: a table such as"),
    (HEAD + '[[step]]\nexpect_rso = "fine"\n', "step 1: expect_rso: state \"fine\" is not an RSO state"),
    (HEAD + '[[step]]\nexpect_rso = {links = {1 = "up"}}\n', "step 1: expect_rso: links: a string, number"),
    (HEAD + '[[step]]\nexpect_event = ["DRIVE_FAILED", 3]\n', "step 1: expect_event: a string or a list"),
    (HEAD + '[[step]]\nexpect_no_event = "NOPE"\n', "step 1: expect_no_event: \"NOPE\" is not an event code"),
    (HEAD + '[[step]]\nname = "idle"\n', "step 1 (idle): does nothing"),
    (HEAD + '[[step]]\nat = "5s"\n[[step]]\nat = "2s"\n', "step 2: at = 2s comes before an earlier step's at = 5s"),
    (HEAD + '[[step]]\nat = "5s"\nnot toml', "not valid TOML"),
    (HEAD + 'shelf = "nowhere.toml"\n' + STEP, "shelf: nowhere.toml: no such file"),
])
def test_mistakes_are_one_line_naming_the_step_and_key(text: str, words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        loads(text, Path("drill.toml"))
    message = str(err.value)
    assert message.startswith("drill.toml: ") and words in message, message
    assert "\n" not in message and "Traceback" not in message


def test_a_missing_or_binary_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match="not a text file"):
        load(tmp_path / "bin.toml")


def test_the_version_and_roles_are_the_documented_ones() -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    assert f"format = {FORMAT_VERSION}" in doc
    for role in HOST_ROLES:
        assert f"`{role}`" in doc


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "msa500_emu", "scenario", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_cli_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(HEAD + '[[step]]\nat = "1s"\ncommand = "FAULT DISK0 FAIL"\n')
    for args in (("check", str(bad)), ("run", "--virtual-clock", str(bad)), ("run", str(bad))):
        p = cli(*args)
        assert p.returncode == 2, p
        assert p.stderr.count("\n") == 1 and "step 1: command: 'FAULT DISK0 FAIL'" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and not p.stdout
    p = cli("check", str(EXAMPLES[0]))
    assert p.returncode == 0 and "format 1: ok" in p.stdout


def test_the_cli_says_when_no_array_answers(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x" * 32 + "\n")
    p = cli("run", str(EXAMPLES[0]), "--api", "http://127.0.0.1:9", "--token-file", str(token))
    assert p.returncode == 3 and "cannot reach the array" in p.stderr and "Traceback" not in p.stderr, p


def test_a_shelf_that_cannot_be_built_is_one_line_on_the_virtual_clock(tmp_path: Path) -> None:
    from msa500_emu.scenario import run_virtual

    for shelf, words in (('[shelf]\ndrive_size = "1KiB"\n', "drive size 1024 too small"),
                         ('[shelf]\ndrive_size = "256MiB"\n[[shelf.arrays]]\nname = "A"\nbays = [1, 2]\n'
                          '[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "1"\nsize = "100GiB"\n',
                          "array A has 267386880 left")):
        (tmp_path / "bad-shelf.toml").write_text(shelf)
        (tmp_path / "drill.toml").write_text(HEAD + 'shelf = "bad-shelf.toml"\n' + STEP)
        with pytest.raises(ScenarioError) as err:
            run_virtual(tmp_path / "drill.toml")
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)
        p = cli("run", "--virtual-clock", str(tmp_path / "drill.toml"))
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
