"""Scenario files (docs/scenarios.md): a TOML timeline of steps, read and checked before anything runs.

Every mistake is one line naming the step and the key (ScenarioError), never a traceback: the
file is checked whole (commands against the command language and the operations registry, event
codes against the event table, states against the unit and RSO vocabularies) so a drill never
stops half-way because of a typo in its last step.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_model import operations as ops
from firmware_model.events import EventCode
from firmware_model.rso import RsoState

from ..management import commands, watch
from ..management.grammar import CommandError, NoViews

FORMAT_VERSION = 1
DEFAULT_INTERVAL_S = 1.0  # how often the simulated hosts heartbeat and acknowledge
DEFAULT_AFTER_WITHIN_S = 60.0  # how long `after` waits for its event unless `within` says
HOST_ROLES = ("primary", "recovery")  # the RSO hosts: port 1 heartbeats, port 2 acknowledges and takes over
HOST_ACTIONS = ("up", "down")
TOP_KEYS = {"format", "name", "description", "shelf", "hosts", "step"}
STEP_KEYS = {"name", "at", "after", "within", "command", *HOST_ROLES, "expect_unit", "expect_rso",
             "expect_event", "expect_no_event"}
EVENT_CODES = frozenset(e.value for e in EventCode)
RSO_STATES = tuple(s.value for s in RsoState)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", re.IGNORECASE)
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


class ScenarioError(Exception):
    """A scenario that cannot be read or run: the message is one line naming the file, step and key."""


@dataclass(frozen=True)
class UnitExpect:
    lun: int
    state: str  # watch.STATES vocabulary: ok, interim recovery, rebuilding, failed, powered-off ...


@dataclass(frozen=True)
class Step:
    """One line of the timeline: when it runs, what it does, what must then hold."""

    number: int  # 1-based, as the file lists them
    name: str = ""
    at: float | None = None  # seconds from the start of the scenario
    after: str | None = None  # an event code logged since the previous step began
    within: float | None = None  # how long the step may wait (for `after`, then for its expectations)
    commands: tuple[str, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()  # (role, "up"|"down")
    expect_unit: tuple[UnitExpect, ...] = ()
    expect_rso: tuple[tuple[str, Any], ...] = ()  # RSO STATUS field -> value
    expect_event: tuple[str, ...] = ()
    expect_no_event: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or f"step {self.number}"

    @property
    def expects(self) -> bool:
        return bool(self.expect_unit or self.expect_rso or self.expect_event or self.expect_no_event)


@dataclass(frozen=True)
class Scenario:
    path: Path | None
    name: str
    description: str = ""
    shelf: Path | None = None  # the TOML config of the shelf it is written for (what --virtual-clock builds)
    interval: float = DEFAULT_INTERVAL_S
    steps: tuple[Step, ...] = field(default_factory=tuple)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from "5s", "500ms", "2m", "1h", "1.5s" or a bare number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ScenarioError(f"{where}: a duration such as \"5s\" or \"500ms\", not {_kind(value)}")
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m:
            raise ScenarioError(f"{where}: {value!r} is not a duration (5s, 500ms, 2m, 1h)")
        seconds = float(m.group(1)) * _SCALE[(m.group(2) or "s").lower()]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{where}: {value!r} is not a duration of zero or more seconds")
    return seconds


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{p}: not a text file") from None
    return loads(text, p)


def loads(text: str, path: Path | None = None) -> Scenario:
    where = str(path) if path is not None else "scenario"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    return parse(raw, path)


def parse(raw: Mapping[str, Any], path: Path | None = None) -> Scenario:
    where = str(path) if path is not None else "scenario"
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    if "format" not in raw:
        raise ScenarioError(f"{where}: format = {FORMAT_VERSION} missing (the version of the scenario format)")
    if raw["format"] != FORMAT_VERSION or isinstance(raw["format"], bool):
        raise ScenarioError(f"{where}: format {raw['format']!r} unknown; this msa500-emu reads format {FORMAT_VERSION}")
    name = _text(raw, "name", where) or (path.stem if path is not None else "scenario")
    shelf = None
    if "shelf" in raw:
        shelf = Path(_text(raw, "shelf", where))
        if not shelf.is_absolute() and path is not None:
            shelf = path.parent / shelf
        if not shelf.is_file():
            raise ScenarioError(f"{where}: shelf: {shelf}: no such file (a TOML config, relative to the scenario)")
    interval = DEFAULT_INTERVAL_S
    if "hosts" in raw:
        hosts = raw["hosts"]
        if not isinstance(hosts, dict):
            raise ScenarioError(f"{where}: hosts: a table ([hosts] interval = \"1s\"), not {_kind(hosts)}")
        extra = sorted(set(hosts) - {"interval"})
        if extra:
            raise ScenarioError(f"{where}: hosts: unknown key {extra[0]!r} (known: interval)")
        if "interval" in hosts:
            interval = parse_duration(hosts["interval"], f"{where}: hosts.interval")
            if interval < 0.01:
                raise ScenarioError(f"{where}: hosts.interval: at least 10ms")
    steps_raw = raw.get("step", [])
    if not isinstance(steps_raw, list) or not all(isinstance(s, dict) for s in steps_raw):
        raise ScenarioError(f"{where}: step: a list of [[step]] tables")
    if not steps_raw:
        raise ScenarioError(f"{where}: no [[step]] tables: nothing to run")
    steps = tuple(_step(s, i + 1, where) for i, s in enumerate(steps_raw))
    last = 0.0
    for st in steps:
        if st.at is not None:
            if st.at < last:
                raise ScenarioError(f"{where}: {_who(st)}: at = {st.at:g}s comes before an earlier step's "
                                    f"at = {last:g}s (steps run in the order listed)")
            last = st.at
    return Scenario(path, name, _text(raw, "description", where), shelf, interval, steps)


def _step(raw: dict[str, Any], number: int, where: str) -> Step:
    name = raw.get("name", "")
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: step {number}: name: a string, not {_kind(name)}")
    who = f"{where}: step {number}" + (f" ({name})" if name else "")
    unknown = sorted(set(raw) - STEP_KEYS)
    if unknown:
        raise ScenarioError(f"{who}: unknown key {unknown[0]!r} (known: {', '.join(sorted(STEP_KEYS))})")
    if "at" in raw and "after" in raw:
        raise ScenarioError(f"{who}: at and after: one or the other (a time, or an event)")
    at = parse_duration(raw["at"], f"{who}: at") if "at" in raw else None
    after = None
    if "after" in raw:
        after = _event(raw["after"], f"{who}: after")
    within = parse_duration(raw["within"], f"{who}: within") if "within" in raw else None
    cmds = _strings(raw.get("command", []), f"{who}: command")
    for line in cmds:
        _check_command(line, f"{who}: command")
    hosts: list[tuple[str, str]] = []
    for role in HOST_ROLES:
        if role in raw:
            action = raw[role]
            if not isinstance(action, str) or action.lower() not in HOST_ACTIONS:
                raise ScenarioError(f"{who}: {role}: \"up\" or \"down\", not {_shown(action)}")
            hosts.append((role, action.lower()))
    units = tuple(_unit(u, f"{who}: expect_unit") for u in _tables(raw.get("expect_unit", []), f"{who}: expect_unit"))
    rso = _rso(raw["expect_rso"], f"{who}: expect_rso") if "expect_rso" in raw else ()
    events = tuple(_event(e, f"{who}: expect_event") for e in _strings(raw.get("expect_event", []),
                                                                        f"{who}: expect_event"))
    never = tuple(_event(e, f"{who}: expect_no_event") for e in _strings(raw.get("expect_no_event", []),
                                                                          f"{who}: expect_no_event"))
    st = Step(number, name, at, after, within, cmds, tuple(hosts), units, rso, events, never)
    if not (cmds or hosts or st.expects or after or at is not None):
        raise ScenarioError(f"{who}: does nothing (give at/after, a command, primary/recovery or an expect_ key)")
    return st


def _who(st: Step) -> str:
    return f"step {st.number}" + (f" ({st.name})" if st.name else "")


def _unit(raw: dict[str, Any], where: str) -> UnitExpect:
    extra = sorted(set(raw) - {"lun", "state"})
    if extra:
        raise ScenarioError(f"{where}: unknown key {extra[0]!r} (known: lun, state)")
    lun = raw.get("lun")
    if not isinstance(lun, int) or isinstance(lun, bool) or lun not in ops.LUNS:
        raise ScenarioError(f"{where}: lun: a unit number {ops.LUNS}, not {_shown(lun)}")
    if not isinstance(raw.get("state"), str):
        raise ScenarioError(f"{where}: state missing (one of {', '.join(watch.STATES)})")
    try:
        state = watch.parse_state(raw["state"])
    except CommandError as exc:
        raise ScenarioError(f"{where}: state: {exc}") from None
    return UnitExpect(lun, state)


def _rso(raw: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """A state name, or a table of RSO STATUS fields and the values they must have."""
    fields = {"state": raw} if isinstance(raw, str) else raw
    if not isinstance(fields, dict) or not fields:
        raise ScenarioError(f"{where}: an RSO state (\"ok\") or a table of RSO STATUS fields, not {_kind(raw)}")
    state = fields.get("state")
    if state is not None and state not in RSO_STATES:
        raise ScenarioError(f"{where}: state {_shown(state)} is not an RSO state ({', '.join(RSO_STATES)})")
    for key, value in fields.items():
        if isinstance(value, dict | list):
            raise ScenarioError(f"{where}: {key}: a string, number or boolean, not {_kind(value)}")
    return tuple(fields.items())


def _event(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.upper() not in EVENT_CODES:
        raise ScenarioError(f"{where}: {_shown(value)} is not an event code (SHOW EVENTS lists them; "
                            f"e.g. DRIVE_FAILED, REBUILD_STARTED, RSO_FAILOVER)")
    return value.upper()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ScenarioError(f"{where}: a string or a list of strings, not {_kind(value)}")
    return tuple(v.strip() for v in items)


def _tables(value: Any, where: str) -> Sequence[dict[str, Any]]:
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
        raise ScenarioError(f"{where}: a table such as {{lun = 1, state = \"ok\"}} or a list of them, "
                            f"not {_kind(value)}")
    return items


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: {key}: a string, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), "a date")


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else _kind(value)


class _Checker(NoViews):
    """An array that only checks: what a command would send must pass the operations registry."""

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        try:
            ops.bind(op, args, kwargs)
        except ops.OperationError as exc:
            raise CommandError(str(exc)) from None
        raise _Checked


class _Checked(Exception):
    """The command reached the registry and passed: stop before anything renders."""


def _check_command(line: str, where: str) -> None:
    try:
        commands.run(_Checker(), line)
    except _Checked:
        pass
    except CommandError as exc:
        raise ScenarioError(f"{where}: {line!r}: {exc}") from None
    except Exception:  # a SHOW renders an empty answer; the words themselves were understood
        pass
