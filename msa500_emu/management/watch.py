"""`ctl WAIT UNIT n` and `ctl SHOW UNITS --watch`: progress you can watch, polled from the API.

Client-side on purpose: every HTTP request of the API answers at once (none hangs for a
rebuild), so waiting is a bounded loop of `GET /api/units`, one request per interval, each with
its own timeout. In a terminal a bar (or the table) redraws in place; when stdout is not a
terminal, one plain line per change of state or per 10 % step, so logs and CI output stay short.
The state vocabulary (a unit's own state, or `powered-off` while the shelf is) is the one the
pytest plugin's `wait_for_unit_state` uses too.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from firmware_model import operations as ops
from firmware_model.controller.records import UnitState

from . import render
from .grammar import CommandError, number, options

POWERED_OFF = "powered-off"  # not a UnitState: what a unit of a powered-off shelf is to its hosts
STATES = (*(s.value for s in UnitState), POWERED_OFF)
WAIT_USAGE = f"WAIT UNIT n [STATE={'|'.join(s.upper().replace(' ', '-') for s in STATES)}] [TIMEOUT=s]"
DEFAULT_TIMEOUT_S = 3600.0
MAX_TIMEOUT_S = 7 * 86400.0
REQUEST_TIMEOUT_S = 10.0
BAR_WIDTH = 30
EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_TIMEOUT = 1, 3, 4


class ApiError(Exception):
    """The API could not be asked (`unreachable`) or refused the request; the message is one line."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class Api:
    """GET requests to the management API with the token, each bounded by a timeout."""

    def __init__(self, base: str, token: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            raise ApiError(str(body.get("error") or f"HTTP {exc.code}")) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the array at {self.base}: {reason}", unreachable=True) from None

    def units(self) -> list[dict[str, Any]]:
        return list(self.get("/api/units"))


# -- the state vocabulary (shared with the pytest plugin) ---------------------------------------
def unit_state(u: Mapping[str, Any]) -> str:
    """What a unit is to its hosts: its own state, or powered-off while the shelf is."""
    return POWERED_OFF if u.get("powered") is False else str(u.get("state", "-"))


def parse_state(text: str) -> str:
    """A state as a user writes it (OK, interim-recovery, "INTERIM RECOVERY", powered_off)."""
    def norm(s: str) -> str:
        return " ".join(s.lower().replace("_", " ").replace("-", " ").split())

    for state in STATES:
        if norm(state) == norm(text):
            return state
    raise CommandError(f"STATE={text} not one of {', '.join(s.upper().replace(' ', '-') for s in STATES)}")


def impossible(u: Mapping[str, Any] | None, lun: int, target: str) -> str | None:
    """Why unit `lun` can no longer reach `target` (a failed unit stays failed), or None."""
    if u is None:
        return f"unit {lun} does not exist (any more)"
    if u.get("state") == UnitState.FAILED.value and target not in (UnitState.FAILED.value, POWERED_OFF):
        return f"unit {lun} is FAILED: it cannot become {target.upper()}"
    return None


def progress(u: Mapping[str, Any]) -> int | None:
    """The rebuild or expansion percentage of a unit, None when neither runs."""
    for key in ("rebuild_percent", "expand_percent"):
        v = u.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def find(units: list[dict[str, Any]], lun: int) -> dict[str, Any] | None:
    return next((u for u in units if u.get("lun") == lun), None)


def bar(percent: int | None, width: int = BAR_WIDTH) -> str:
    """[##########--------------------]; all dashes when nothing is in progress."""
    filled = 0 if percent is None else max(0, min(width, round(width * percent / 100)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


# -- WAIT UNIT n ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WaitSpec:
    lun: int
    state: str = UnitState.OK.value
    timeout: float = DEFAULT_TIMEOUT_S


def parse_wait(words: list[str]) -> WaitSpec:
    """The words after `ctl`: WAIT UNIT n [STATE=s] [TIMEOUT=s]."""
    up = [w.upper() for w in words]
    if up[:2] != ["WAIT", "UNIT"]:
        raise CommandError(f"usage: {WAIT_USAGE}")
    pos, o = options(words[2:], {"STATE", "TIMEOUT"}, WAIT_USAGE)
    if len(pos) != 1:
        raise CommandError(f"{'unit number missing' if not pos else f'unexpected {pos[1]!r}'} (usage: {WAIT_USAGE})")
    lun = number(pos[0], "unit", ops.LUNS)
    state = parse_state(o["STATE"]) if "STATE" in o else UnitState.OK.value
    timeout = DEFAULT_TIMEOUT_S
    if "TIMEOUT" in o:
        try:
            timeout = float(o["TIMEOUT"].lower().removesuffix("s"))
        except ValueError:
            raise CommandError(f"TIMEOUT={o['TIMEOUT']} is not a number of seconds") from None
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise CommandError(f"TIMEOUT={o['TIMEOUT']} outside 0-{MAX_TIMEOUT_S:.0f} seconds")
    return WaitSpec(lun, state, timeout)


class Output:
    """Where progress goes: a bar redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.drawn = False

    def redraw(self, text: str) -> None:
        self.out.write("\r\x1b[K" + text)
        self.out.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        if self.drawn:
            self.out.write("\n")
            self.drawn = False
        self.out.write(text + "\n")
        self.out.flush()


def _stamp() -> str:
    return render.when(time.time())


def wait_unit(api: Api, spec: WaitSpec, out: Output, *, interval: float = 0.5,
              clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              ) -> tuple[int, str, dict[str, Any] | None]:
    """Poll until unit `spec.lun` is in `spec.state`: (exit status, one line, the unit's last view).

    Exit 0 when reached, 1 when it cannot be any more (failed, deleted), 4 after the timeout.
    """
    start = clock()
    deadline = start + spec.timeout
    shown: tuple[str, int | None] | None = None
    want = spec.state.upper()
    while True:
        u = find(api.units(), spec.lun)
        elapsed = clock() - start
        if u is not None and unit_state(u) == spec.state:
            line = f"unit {spec.lun}: {want}, reached after {render.value(round(elapsed, 1))} s"
            out.line(line if out.tty else f"{_stamp()}  {line}")
            return 0, line, u
        why = impossible(u, spec.lun, spec.state)
        if why is not None:
            return EXIT_REFUSED, f"{why} (waited {render.value(round(elapsed, 1))} s for {want})", u
        assert u is not None
        pct = progress(u)
        state = render.unit_state(u)
        if out.tty:
            pct_text = "-" if pct is None else f"{pct}%"
            out.redraw(f"unit {spec.lun}  {state:<24} {bar(pct)} {pct_text:>4}  {elapsed:6.1f} s  (waiting for {want})")
        else:
            mark = (state if pct is None else state.rsplit(" ", 1)[0], None if pct is None else pct // 10)
            if mark != shown:
                out.line(f"{_stamp()}  unit {spec.lun}: {state}")
                shown = mark
        left = deadline - clock()
        if left <= 0:
            return EXIT_TIMEOUT, (f"unit {spec.lun} not {want} within {render.value(spec.timeout)} s "
                                  f"(still {state})"), u
        sleep(min(interval, left))


# -- SHOW UNITS --watch ---------------------------------------------------------------------------
def watch_units(api: Api, out: Output, *, count: int | None = None, interval: float = 1.0,
                sleep: Callable[[float], None] = time.sleep) -> int:
    """Redraw SHOW UNITS in a terminal; otherwise the table once, then a line per changed unit.

    `count` polls at most (None: until Ctrl-C, which ends it cleanly with exit 0).
    """
    marks: dict[int, tuple[str, int | None]] = {}
    polls = 0
    try:
        while count is None or polls < count:
            units = api.units()
            polls += 1
            if out.tty:
                footer = f"\n\n{_stamp()}  every {render.value(interval)} s" + (
                    f", {polls} of {count}" if count else ", Ctrl-C ends")
                out.out.write("\x1b[H\x1b[J" + render.units_text(units) + footer + "\n")
                out.out.flush()
            else:
                now = {int(u["lun"]): u for u in units}
                if polls == 1:
                    out.line(render.units_text(units))
                for lun, u in sorted(now.items()):
                    pct = progress(u)
                    state = render.unit_state(u)
                    mark = (state if pct is None else state.rsplit(" ", 1)[0], None if pct is None else pct // 10)
                    if polls > 1 and marks.get(lun) != mark:
                        out.line(f"{_stamp()}  unit {lun}: {state}")
                    marks[lun] = mark
                for lun in sorted(set(marks) - set(now)):
                    out.line(f"{_stamp()}  unit {lun}: deleted")
                    del marks[lun]
            if count is None or polls < count:
                sleep(interval)
    except KeyboardInterrupt:
        if out.tty:
            out.out.write("\n")
            out.out.flush()
    return 0


# -- the `ctl` entry -------------------------------------------------------------------------------
def ctl(api: Api, words: list[str], out: TextIO, err: TextIO, *, as_json: bool = False, watch: bool = False,
        count: int | None = None, interval: float | None = None) -> int:
    """`ctl WAIT UNIT ...` or `ctl SHOW UNITS --watch`: the exit status; errors as one line on `err`."""
    tty = out.isatty() and not as_json
    try:
        if interval is not None and not 0.1 <= interval <= 3600:
            raise CommandError(f"--interval {render.value(interval)}: 0.1 to 3600 seconds")
        if count is not None and count < 1:
            raise CommandError(f"--count {count}: at least 1")
        if watch:
            if [w.upper() for w in words] != ["SHOW", "UNITS"]:
                raise CommandError("--watch goes with SHOW UNITS (and WAIT UNIT n waits for one unit)")
            if as_json:
                return _watch_json(api, out, count, interval or 1.0)
            return watch_units(api, Output(out, tty), count=count, interval=interval or 1.0)
        spec = parse_wait(words)
        status, line, unit = wait_unit(api, spec, Output(out, tty) if not as_json else Output(io.StringIO(), False),
                                       interval=interval or 0.5)
    except CommandError as exc:
        err.write(f"msa500-emu ctl: {exc}\n")
        return EXIT_REFUSED
    except ApiError as exc:
        err.write(f"msa500-emu ctl: {exc}\n")
        return EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED
    except KeyboardInterrupt:
        err.write("\nmsa500-emu ctl: interrupted\n")
        return 130
    except BrokenPipeError:  # `ctl SHOW UNITS --watch | head`: the reader has seen enough
        _quiet(out)
        return 0
    if as_json:  # WAIT --json: the answer only, in the API's shape
        out.write(json.dumps({"ok": status == 0, "result": unit, "text": line} if status == 0 else
                             {"ok": False, "error": line, "result": unit}, indent=2) + "\n")
    elif status:
        err.write(f"msa500-emu ctl: {line}\n")
    return status


def _watch_json(api: Api, out: TextIO, count: int | None, interval: float) -> int:
    """--json --watch: one JSON line of the units per poll."""
    polls = 0
    try:
        while count is None or polls < count:
            out.write(json.dumps(api.units()) + "\n")
            out.flush()
            polls += 1
            if count is None or polls < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0



def _quiet(out: TextIO) -> None:
    """After a broken pipe: point the stream at /dev/null, so the exit's flush says nothing either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass
