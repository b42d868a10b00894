"""Every command of the management language, with every option, against a real emulator.

The commands come from the grammar itself (`COMMANDS` in msa500_emu/management/commands.py, the
only way `run` dispatches), expanded by the usage notation (tests/integration/notation.py), so a
new command or option is sent here without anyone listing it. Each command gets a fresh
in-process emulator on the built-in default shelf and runs its usage line top to bottom with the
sample values below, then broken forms of the same commands (a bad value for each option, an
unknown option, nothing after the command's words). Every answer must be a sensible one: 200 with
a text that holds no Python repr, or 400 with one line naming the problem; never 500, never the
503 of an internal error, never a traceback in the server log. Each command must also succeed at
least once, so the samples stay meaningful.

The API's own error answers (404, 405, 413, the 503 of a bug) and what the views say about a
powered-off shelf, a failed battery and injected media errors are checked here too.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.management.auth import find_token
from msa500_emu.management.commands import COMMANDS
from msa500_emu.management.render import POWER_OFF_NOTE
from msa500_emu.testing import InProcessArray, start_array

from .notation import expand, is_placeholder

# Placeholder -> the word sent, first as "COMMAND:placeholder", then as "placeholder". Chosen for
# the default shelf: bays 1-2 unit 1 (RAID 1), bays 3-6 unit 2 (RAID 5), bay 7 their spare,
# bays 8-10 unassigned, 11-14 empty. A placeholder missing here fails the test with its name.
SAMPLES = {
    "SHOW:n": "5",
    "ADD UNIT:DISKa-DISKb": "DISK8-DISK10",
    "ADD UNIT:a": "B",
    "ADD UNIT:s": "64MB",
    "EXPAND UNIT:DISKa-DISKb": "DISK8-DISK9",
    "EXTEND UNIT:s": "17GB",
    "ADD SPARE:DISKm": "DISK8",
    "ADD SPARE:DISKk": "DISK9",
    "DELETE SPARE:DISKm": "DISK7",
    "DELETE SPARE:DISKk": "DISK8",
    "RSO:s": "5",
    "FAULT:s": "30",
    "n": "2",
    "k": "64",
    "x": "logs",
    "DISKm": "DISK4",
    "lba": "2048",
    "count": "64",
    "ms": "200",
    "c": "55",
    "PSUn": "PSU1",
    "FANn": "FAN2",
    "LINKn": "LINK2",
    "name": "web",
    "iqn": "iqn.2026-12.lab:web",
    "addrs": "127.0.0.1:16162",  # SET ALERTS: SNMP managers, syslog receivers (nothing listens there)
    "urls": "http://127.0.0.1:9/hook",
    "INJECT UNIT:0xNN": "0x28",  # INJECT UNIT (msa500_emu/management/fault_commands.py)
    "INJECT UNIT:a-b": "0-7",
    "INJECT UNIT:SENSE=k/asc/ascq": "SENSE=3/11/0",
    "INJECT UNIT:DELAY=ms": "DELAY=200",
    "DELETE INJECTION:id": "1",
}
# Commands run first on the fresh emulator of a command that needs something to act on.
SETUP = {
    "DELETE CONNECTION": ["ADD CONNECTION web IQN=iqn.2026-12.lab:web"],
    "ADD ACL": ["ADD CONNECTION web IQN=iqn.2026-12.lab:web"],
    "DELETE ACL": ["ADD CONNECTION web IQN=iqn.2026-12.lab:web", "ADD ACL CONNECTION=web UNIT=2"],
}
REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b|object at 0x|Traceback")


def sample(key: str, placeholder: str) -> str:
    for name in (f"{key}:{placeholder}", placeholder):
        if name in SAMPLES:
            return SAMPLES[name]
    raise AssertionError(f"the usage of {key} has the placeholder {placeholder!r}: give it a value in SAMPLES")


def good_commands(key: str) -> list[str]:
    luns = iter(range(3, 33))  # ADD UNIT: a new LUN each time, so every RAID level is really built

    def fill(placeholder: str, _option: str | None) -> str:
        return str(next(luns)) if (key, placeholder) == ("ADD UNIT", "n") else sample(key, placeholder)

    return expand(COMMANDS[key].usage, fill)


def broken_commands(key: str, good: list[str]) -> list[str]:
    """The same commands with one bad option value each, an unknown option, and nothing after the key."""
    out = [key, f"{key} BOGUS=1", f"{key} 999999999999"]
    for line in dict.fromkeys(good):
        words = line.split()
        for i, w in enumerate(words):
            if "=" in w:
                out.append(" ".join([*words[:i], w.split("=", 1)[0] + "=@@", *words[i + 1:]]))
            elif i >= len(key.split()) and not is_placeholder(w):
                out.append(" ".join([*words[:i], "@@", *words[i + 1:]]))
        out.append(" ".join(words[:-1]))
    return list(dict.fromkeys(out))


def post(arr: InProcessArray, line: str) -> tuple[int, Any]:
    req = urllib.request.Request(arr.api + "/api/command", data=json.dumps({"command": line}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    return send(req)


def send(req: urllib.request.Request | str) -> tuple[int, Any]:
    """Send with the API token (the array recorded it for this user) and, for a body, as JSON."""
    req = urllib.request.Request(req) if isinstance(req, str) else req
    req.add_header("Authorization", f"Bearer {find_token(req.full_url)}")
    if req.data is not None and not req.has_header("Content-type"):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def sensible(line: str, status: int, body: Any) -> str | None:
    """None when the answer is a sensible one, else what is wrong with it."""
    if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
        return f"HTTP {status}, not the JSON answer: {body!r}"
    if body["ok"]:
        text = body.get("text")
        if status != 200 or "result" not in body or not isinstance(text, str) or not text:
            return f"HTTP {status}, ok without result and text: {body!r}"
        if REPR.search(text):
            return f"a Python repr in the text: {text!r}"
        return None
    error = body.get("error")
    if status != 400 or not isinstance(error, str) or not error.strip() or "\n" in error:
        return f"HTTP {status}, not a one-line refusal: {body!r}"
    if "internal error" in error or "Traceback" in error:
        return f"a bug answered as a refusal: {error!r}"
    return None


@pytest.fixture
def shelf(tmp_path: Path) -> Iterator[InProcessArray]:
    arr = start_array(tmp_path / "shelf", mode="inprocess")
    yield arr
    assert arr.stop() == 0, arr.log_tail()


@pytest.mark.parametrize("key", list(COMMANDS))
def test_every_command_and_option_gets_a_sensible_answer(shelf: InProcessArray, key: str) -> None:
    good = good_commands(key)
    for line in SETUP.get(key, []):
        status, body = post(shelf, line)
        assert status == 200 and body["ok"], (line, body)
    outcome: list[str] = []
    problems: list[str] = []
    for line in good + broken_commands(key, good):
        status, body = post(shelf, line)
        wrong = sensible(line, status, body)
        if wrong:
            problems.append(f"{line}: {wrong}")
        ok = isinstance(body, dict) and body.get("ok")
        outcome.append(f"{'ok ' if ok else 'no '} {line}" + ("" if ok else f"  -> {body.get('error')}"))
    print("\n".join(outcome))
    assert not problems, "\n".join(problems)
    assert any(o.startswith("ok ") for o in outcome[: len(good)]), f"no command of {key} succeeded"
    log = shelf.log.read_text()
    assert "Traceback" not in log and "internal error" not in log, log[-4000:]


def test_grammar_keys_are_their_usage_lines_first_words() -> None:
    """`run` finds a command by the first words of its usage line: they must agree."""
    for key, command in COMMANDS.items():
        assert command.usage.split()[: len(key.split())] == key.split(), key


def test_the_readme_add_unit_line_creates_the_unit(shelf: InProcessArray) -> None:
    """Its NAME= once met a `name` parameter of the dispatcher (HTTP 500)."""
    status, body = post(shelf, 'ADD UNIT 3 DATA="DISK8-DISK10" RAID_LEVEL=5 STRIPE_SIZE=64 SIZE=4GB NAME=logs')
    assert status == 200 and body["ok"], body
    unit = shelf.unit(3)
    assert unit["name"] == "logs" and unit["size_bytes"] == 4 << 30 and unit["bays"] == [8, 9, 10]


# -------------------------------------------------------------------------- the API's own errors
def test_api_errors_are_one_line_json(shelf: InProcessArray) -> None:
    cases = [
        (urllib.request.Request(shelf.api + "/api/nothing"), 404, "no API path /api/nothing"),
        (urllib.request.Request(shelf.api + "/api/units", data=b"{}", method="POST"), 405, "method not allowed"),
        (urllib.request.Request(shelf.api + "/api/command", data=b"x" * (65 * 1024), method="POST"), 413,
         "too large"),
        (urllib.request.Request(shelf.api + "/api/command", data=b"{nope", method="POST"), 400, "not JSON"),
        (urllib.request.Request(shelf.api + "/api/command", data=b"[1]", method="POST"), 400, "command"),
        (urllib.request.Request(shelf.api + "/api/events?since=x"), 400, "since"),
    ]
    for req, want, words in cases:
        status, body = send(req)
        assert status == want and isinstance(body, dict) and body["ok"] is False, (req.full_url, status, body)
        assert words in body["error"] and "\n" not in body["error"], body


def test_a_bug_answers_503_one_line_and_logs_its_traceback_once(shelf: InProcessArray) -> None:
    em = shelf.emulator
    assert em is not None and em.shelf is not None

    def boom(*_args: Any, **_kw: Any) -> Any:
        raise RuntimeError("injected bug\nsecond line")

    em.describe = boom  # type: ignore[method-assign]
    status, body = send(shelf.api + "/api/globals")
    assert status == 503 and body["ok"] is False, body
    assert body["error"].startswith("internal error in the emulator answering GET /api/globals: RuntimeError")
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    em.shelf.rso_status = boom  # type: ignore[method-assign]
    status, body = post(shelf, "RSO STATUS")
    assert status == 503 and "command 'RSO STATUS'" in body["error"], body
    status, body = post(shelf, "SHOW UNITS")  # and the array keeps answering
    assert status == 200 and body["ok"]
    log = shelf.log.read_text()
    assert log.count("Traceback") == 2 and log.count("internal error answering") == 2, log[-4000:]


# ------------------------------------------------------------------- views that tell the truth
def test_a_powered_off_shelf_says_so_everywhere(shelf: InProcessArray) -> None:
    assert shelf.health()["status"] == "ok"
    shelf.power_off()
    health = shelf.health()
    assert health["status"] == "powered-off" and health["powered"] is False
    assert re.search(r"Shelf Power:\s+OFF", shelf.ctl("SHOW GLOBALS", json=False))
    units_text = shelf.ctl("SHOW UNITS", json=False)
    assert units_text.splitlines()[0] == POWER_OFF_NOTE and "POWERED OFF" in units_text
    assert all(u["powered"] is False for u in shelf.units())
    shelf.power_on()
    assert shelf.health()["status"] == "ok"
    assert re.search(r"Shelf Power:\s+ON", shelf.ctl("SHOW GLOBALS", json=False))
    assert POWER_OFF_NOTE not in shelf.ctl("SHOW UNITS", json=False)


def test_a_failed_or_removed_battery_reports_no_charge(shelf: InProcessArray) -> None:
    assert re.search(r"Cache Battery:\s+OK, charge 100%", shelf.ctl("SHOW GLOBALS", json=False))
    shelf.battery("fail")
    g = shelf.describe()
    assert g["battery"]["charge_percent"] is None and g["cache"]["battery_charge_percent"] is None
    assert re.search(r"Cache Battery:\s+FAILED, charge unknown, hold-up 0 s", shelf.ctl("SHOW GLOBALS", json=False))
    shelf.battery("remove")
    assert re.search(r"Cache Battery:\s+MISSING, no battery installed", shelf.ctl("SHOW GLOBALS", json=False))
    shelf.battery("restore")
    assert shelf.describe()["battery"]["charge_percent"] == pytest.approx(0, abs=5)


def test_disks_and_events_read_as_words_in_one_unit(shelf: InProcessArray) -> None:
    shelf.media_error(8, 4096, 64)
    shelf.drive_latency(9, 150)
    text = shelf.ctl("SHOW DISKS", json=False)
    row8 = next(line for line in text.splitlines() if line.startswith("DISK8 "))
    assert "media errors at LBA 4096+64" in row8 and "36 GiB" in row8 and not REPR.search(text)
    assert "latency 150 ms" in next(line for line in text.splitlines() if line.startswith("DISK9 "))
    header = text.splitlines()[0]
    for line in text.splitlines()[1:]:  # aligned: every column starts where its header does
        assert line[header.index("State")] != " " and line[header.index("State") - 1] == " ", line
    events = shelf.ctl("SHOW EVENTS 3", json=False).splitlines()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ", events[1]), events
    units = shelf.ctl("SHOW UNITS", json=False)
    assert re.search(r"RAID 5\s+64 KiB\s+16 GiB", units) and "MB" not in units and "GB" not in units
