"""The registry of operations is the one way in: the process runs its rows and nothing else, each
row is a real method with the same parameters, and the command language's limits are the rows'."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import re
from pathlib import Path
from typing import Any

import pytest

from firmware_model import controller as ctl_module
from firmware_model import operations as ops
from firmware_model.controller import Controller, ControllerError
from firmware_model.raid.api import RaidLevel
from msa500_emu import cli
from msa500_emu.config import load
from msa500_emu.management import render
from msa500_emu.management.commands import COMMANDS, CommandError, help_reply, run
from msa500_emu.management.grammar import NoViews
from msa500_emu.server import Emulator
from tests.integration.notation import expand
from tests.unit.shelf_helpers import Clocked

# Public Controller attributes that are not operations: the process's own wiring (timers, shutdown),
# what views are built from, and what the process's rows wrap (power also drops and reopens the
# portals; describe adds the portals and sessions).
NOT_OPERATIONS = {"next_deadline", "advance", "rebuild_progress", "cache_stats", "flush", "close", "powered",
                  "power_off", "power_on", "describe", "data_lost"}
REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b|object at 0x")


# ------------------------------------------------------------------------------ the process
class Recorder:
    """Stands in for the Controller: records what reaches it (nothing should, when refused)."""

    powered = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            assert not args, f"{name} called with positional arguments {args}"
            self.calls.append((name, kwargs))
            return {}

        return call


@pytest.fixture
def emulator(tmp_path: Path) -> tuple[Emulator, Recorder]:
    em = Emulator(load(None, {"state_dir": str(tmp_path)}))
    rec = Recorder()
    em.shelf = rec  # type: ignore[assignment]
    return em, rec


@pytest.mark.parametrize(("op", "args"), [("close", ()), ("advance", (0,)), ("flush", ()), ("_commit", ()),
                                          ("next_deadline", ()), ("__init__", ())])
def test_operate_refuses_what_the_registry_does_not_list(emulator: tuple[Emulator, Recorder], op: str,
                                                         args: tuple[Any, ...]) -> None:
    em, rec = emulator
    with pytest.raises(CommandError, match=rf"unknown operation '{re.escape(op)}'") as err:
        em.operate(op, *args)
    assert "\n" not in str(err.value) and not rec.calls


@pytest.mark.parametrize(("op", "args", "kwargs", "words"), [
    ("fault_disk", (3, "latency"), {"ms": ops.LATENCY_MS.hi + 1}, f"ms {ops.LATENCY_MS.hi + 1} outside"),
    ("fault_disk", (3, "latency"), {}, "argument ms missing for latency"),
    ("fault_disk", (3, "fail"), {"ms": 5}, "ms goes with latency only"),
    ("fault_disk", (ops.BAYS.hi + 1, "fail"), {}, f"bay {ops.BAYS.hi + 1} outside 1..{ops.BAYS.hi}"),
    ("fault_disk", ("3", "fail"), {}, "bay '3' is not a whole number"),
    ("set_temperature", (ops.TEMPERATURE_C.hi + 1,), {}, "outside -40..120"),
    ("fault_psu", (1, "explode"), {}, "action 'explode' not one of fail, restore"),
    ("fault_psu", (1, "fail", 3), {}, "takes 2 positional arguments"),
    ("add_unit", (ops.MAX_LUNS + 1,), {}, f"lun {ops.MAX_LUNS + 1} outside 1..{ops.MAX_LUNS}"),
    ("add_unit", (3,), {"raid": "7"}, "RAID level '7' unknown"),
    ("add_unit", (3,), {"stripe_kib": 17}, "stripe_kib 17 not one of 16, 32"),
    ("add_unit", (3,), {"bays": [1, 99]}, "bay 99 outside"),
    ("add_unit", (3,), {"size_bytes": 1000}, "size_bytes 1000: at least 4096"),
    ("add_unit", (3,), {"colour": "red"}, "unknown argument 'colour'"),
    ("add_unit", (3,), {"lun": 3}, "argument lun given twice"),
    ("rso_configure", (True,), {"timeout_s": float("nan")}, "timeout_s nan is not a number"),
    ("set_cache", (), {"ratio_read_percent": 30}, "not one of 0, 25, 50, 75, 100"),
    ("power_off", (), {"duration": 0}, "duration 0 outside"),
    ("delete_unit", (), {}, "argument lun missing"),
])
def test_arguments_are_checked_before_the_handler_runs(emulator: tuple[Emulator, Recorder], op: str,
                                                       args: tuple[Any, ...], kwargs: dict[str, Any],
                                                       words: str) -> None:
    em, rec = emulator
    with pytest.raises(CommandError) as err:
        em.operate(op, *args, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{op}: ") and words in message and "\n" not in message, message
    assert not rec.calls


def test_a_good_call_reaches_its_handler_with_keywords(emulator: tuple[Emulator, Recorder]) -> None:
    em, rec = emulator
    em.operate("fault_disk", 3, "LATENCY", ms=200)
    em.operate("add_unit", 3, bays=[8, 9, 10], raid="1+0", name="logs")
    em.operate("rso_configure", enabled=False)
    assert rec.calls == [("fault_disk", {"bay": 3, "action": "latency", "ms": 200}),
                         ("add_unit", {"lun": 3, "bays": [8, 9, 10], "raid": "1+0", "name": "logs"}),
                         ("rso_configure", {"enabled": False})]


# ------------------------------------------------------------------------------ the rows
def _params(fn: Any) -> tuple[list[inspect.Parameter], bool]:
    sig = inspect.signature(fn)
    named = [p for name, p in sig.parameters.items() if name != "self" and p.kind is not p.VAR_KEYWORD]
    return named, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


@pytest.mark.parametrize("name", list(ops.OPERATIONS))
def test_every_row_names_a_real_method_with_its_parameters(name: str) -> None:
    row = ops.OPERATIONS[name]
    owner = Emulator if row.owner is ops.Owner.PROCESS else Controller
    fn = getattr(owner, row.method, None)
    assert callable(fn) and not row.method.startswith("_"), f"{name}: {owner.__name__}.{row.method} is no method"
    named, var_kw = _params(fn)
    plain = [a.name for a in row.args if not a.only_for]
    assert [p.name for p in named] == plain, f"{name}: {owner.__name__}.{row.method}{inspect.signature(fn)}"
    for p, a in zip(named, (a for a in row.args if not a.only_for), strict=True):
        assert p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY), f"{name}.{p.name}: keywords must reach it"
        assert a.required == (p.default is p.empty), f"{name}.{p.name}: required in one, optional in the other"
    keywords = [a for a in row.args if a.only_for]
    assert not keywords or var_kw, f"{name}: keyword arguments {keywords} but the method takes no **kw"


def test_every_public_controller_method_is_a_row_or_deliberately_not() -> None:
    public = {n for n in dir(Controller) if not n.startswith("_")}
    rows = {r.method for r in ops.OPERATIONS.values() if r.owner is ops.Owner.CONTROLLER}
    unclassified = public - rows - NOT_OPERATIONS
    assert not unclassified, f"Controller methods neither in the registry nor in NOT_OPERATIONS: {unclassified}"
    assert not rows & NOT_OPERATIONS


def test_fault_disk_keywords_are_the_disk_faults_table() -> None:
    row = ops.OPERATIONS["fault_disk"]
    assert row.arg("action").choices == tuple(ops.DISK_FAULTS)
    for action, keys in ops.DISK_FAULTS.items():
        assert [a.name for a in row.args if action in a.only_for] == list(keys), action


def test_the_controllers_constants_are_the_registrys() -> None:
    """The controller reads its limits from firmware_model.operations: the same objects, not copies."""
    from firmware_model.controller import accelerator, faults, spec

    assert ctl_module.MAX_LUNS == ops.MAX_LUNS and ctl_module.PORT_COUNT == ops.PORT_COUNT
    assert spec.STRIPE_KIB is ops.STRIPE_KIB and spec.DEFAULT_STRIPE_KIB == ops.DEFAULT_STRIPE_KIB
    assert ctl_module.BAY_COUNT == ops.BAYS.hi and accelerator.RATIOS is ops.CACHE_RATIOS
    assert faults.DISK_FAULTS is ops.DISK_FAULTS and faults.LATENCY_MS is ops.LATENCY_MS
    assert faults.TEMPERATURE_C is ops.TEMPERATURE_C and accelerator.CACHE_SIZE_MB is ops.CACHE_SIZE_MB
    assert tuple(ctl_module.RebuildPriority) == ops.REBUILD_PRIORITIES


def test_the_controller_refuses_exactly_past_the_registrys_limits(tmp_path: Path) -> None:
    c = Clocked().open(tmp_path)
    try:
        for ms in (ops.LATENCY_MS.lo, ops.LATENCY_MS.hi):
            c.fault_disk(8, "latency", ms=ms)
        for celsius in (ops.TEMPERATURE_C.lo, ops.TEMPERATURE_C.hi, 25):
            c.set_temperature(celsius)
        c.fault_psu(ops.PSUS.hi, "fail")
        c.fault_fan(ops.FANS.hi, "fail")
        c.fault_link(ops.PORTS.hi, "down")
        c.rso_configure(True, timeout_s=ops.RSO_TIMEOUT_S.hi)
        c.rso_configure(True, timeout_s=ops.RSO_TIMEOUT_S.lo)
        refused = [
            lambda: c.fault_disk(8, "latency", ms=ops.LATENCY_MS.hi + 1),
            lambda: c.fault_disk(ops.BAYS.hi + 1, "fail"),
            lambda: c.set_temperature(ops.TEMPERATURE_C.hi + 1),
            lambda: c.set_temperature(ops.TEMPERATURE_C.lo - 1),
            lambda: c.fault_psu(ops.PSUS.hi + 1, "fail"),
            lambda: c.fault_fan(ops.FANS.hi + 1, "fail"),
            lambda: c.fault_link(ops.PORTS.hi + 1, "down"),
            lambda: c.add_unit(ops.MAX_LUNS + 1, [8]),
            lambda: c.add_unit(3, [8], "0", stripe_kib=17),
            lambda: c.rso_configure(True, timeout_s=ops.RSO_TIMEOUT_S.hi + 1),
            lambda: c.set_cache(ratio_read_percent=30),
            lambda: c.set_cache(size_mb=ops.CACHE_SIZE_MB.hi + 1),
        ]
        for i, call in enumerate(refused):
            with pytest.raises(ControllerError):
                call()
                pytest.fail(f"refused[{i}] was accepted")
    finally:
        c.close()


# ------------------------------------------------------------------------------ the command language
class Binding(NoViews):
    """An array whose operate() is the registry's check: what the language sends must pass it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        row, bound = ops.bind(op, args, kwargs)
        self.calls.append((row.name, bound))
        return {}


def sent(line: str) -> tuple[str, dict[str, Any]]:
    array = Binding()
    run(array, line)
    assert len(array.calls) == 1, array.calls
    return array.calls[0]


FILL = {"n": "2", "a": "B", "s": "64MB", "k": "64", "x": "logs", "DISKa-DISKb": "DISK8-DISK10", "DISKm": "DISK4",
        "DISKk": "DISK9", "lba": "2048", "count": "64", "ms": "200", "c": "55", "PSUn": "PSU1", "FANn": "FAN2",
        "LINKn": "LINK2", "name": "web", "iqn": "iqn.2026-12.lab:web", "addrs": "127.0.0.1:16162",
        "urls": "http://127.0.0.1:9/hook",
        "0xNN": "0x28", "a-b": "0-7", "SENSE=k/asc/ascq": "SENSE=3/11/0", "DELAY=ms": "DELAY=200", "id": "1"}


def test_every_command_of_the_grammar_sends_what_the_registry_accepts() -> None:
    sending: set[str] = set()
    for key, command in COMMANDS.items():
        for line in expand(command.usage, lambda placeholder, opt: "30" if opt in ("TIMEOUT", "DURATION")
                           else FILL[placeholder]):
            array = Binding()
            with contextlib.suppress(CommandError):  # the language's own refusal ("SET CACHE" alone)
                run(array, line)  # raises OperationError if the language sent what the registry refuses
            ran = {op for op, _ in array.calls}
            assert ran <= {f.op for f in command.forms}, (line, ran)
            sending |= {key} if ran else set()
    assert sending == set(COMMANDS) - {"HELP"}  # HELP needs no operate(); SHOW CONNECTIONS and SHOW ACL do


def test_every_row_is_reachable_from_the_language() -> None:
    reached = {f.op for c in COMMANDS.values() for f in c.forms if f.op}
    assert reached == set(ops.OPERATIONS)


@pytest.mark.parametrize(("good", "bad", "op", "arg"), [
    (f"FAULT DISK1 LATENCY {ops.LATENCY_MS.hi}", f"FAULT DISK1 LATENCY {ops.LATENCY_MS.hi + 1}", "fault_disk", "ms"),
    (f"FAULT TEMPERATURE {ops.TEMPERATURE_C.hi}", f"FAULT TEMPERATURE {ops.TEMPERATURE_C.hi + 1}",
     "set_temperature", "celsius"),
    (f"FAULT TEMPERATURE {ops.TEMPERATURE_C.lo}", f"FAULT TEMPERATURE {ops.TEMPERATURE_C.lo - 1}",
     "set_temperature", "celsius"),
    (f"FAULT DISK{ops.BAYS.hi} FAIL", f"FAULT DISK{ops.BAYS.hi + 1} FAIL", "fault_disk", "bay"),
    (f"DELETE UNIT {ops.MAX_LUNS}", f"DELETE UNIT {ops.MAX_LUNS + 1}", "delete_unit", "lun"),
    (f"ADD SPARE UNIT={ops.MAX_LUNS} DISK8", f"ADD SPARE UNIT={ops.MAX_LUNS + 1} DISK8", "add_spare", "lun"),
    (f"FAULT PSU{ops.PSUS.hi} FAIL", f"FAULT PSU{ops.PSUS.hi + 1} FAIL", "fault_psu", "n"),
    (f"FAULT FAN{ops.FANS.hi} RESTORE", f"FAULT FAN{ops.FANS.hi + 1} RESTORE", "fault_fan", "n"),
    (f"FAULT LINK{ops.PORTS.hi} DOWN", f"FAULT LINK{ops.PORTS.hi + 1} DOWN", "fault_link", "port"),
    ("FAULT DISK1 MEDIA-ERROR 0 1", "FAULT DISK1 MEDIA-ERROR 0 0", "fault_disk", "count"),
    (f"FAULT SHELF POWER-OFF DURATION={ops.POWER_OFF_S.hi}", f"FAULT SHELF POWER-OFF DURATION={ops.POWER_OFF_S.hi + 1}",
     "power_off", "duration"),
    (f"RSO ENABLE TIMEOUT={ops.RSO_TIMEOUT_S.lo}", f"RSO ENABLE TIMEOUT={ops.RSO_TIMEOUT_S.lo / 2}",
     "rso_configure", "timeout_s"),
    ('ADD UNIT 3 DATA="DISK8-DISK10" RAID_LEVEL=5 STRIPE_SIZE=256', 'ADD UNIT 3 DATA="DISK8-DISK10" RAID_LEVEL=5 '
     'STRIPE_SIZE=17', "add_unit", "stripe_kib"),
    ("SET CACHE RATIO=75", "SET CACHE RATIO=70", "set_cache", "ratio_read_percent"),
])
def test_the_languages_limits_are_the_registrys(good: str, bad: str, op: str, arg: str) -> None:
    assert sent(good)[0] == op
    with pytest.raises(CommandError) as err:
        run(Binding(), bad)  # refused by the language itself, in its own words
    limit = ops.OPERATIONS[op].arg(arg).limit
    choices = ops.OPERATIONS[op].arg(arg).choices
    wanted = [str(limit), f"{limit.lo}-{limit.hi}"] if isinstance(limit, ops.Limit) else [", ".join(map(str, choices))]
    assert any(w in str(err.value) for w in wanted), str(err.value)


def test_the_language_follows_a_changed_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The language reads the rows when it checks, so it cannot keep a copy of its own."""
    row = ops.OPERATIONS["fault_disk"]
    args = tuple(dataclasses.replace(a, limit=ops.Limit(0, 100)) if a.name == "ms" else a for a in row.args)
    monkeypatch.setitem(ops.OPERATIONS, "fault_disk", dataclasses.replace(row, args=args))
    assert sent("FAULT DISK1 LATENCY 100")[1]["ms"] == 100
    with pytest.raises(CommandError, match=r"latency 101 outside 0\.\.100"):
        run(Binding(), "FAULT DISK1 LATENCY 101")


def test_every_raid_name_reaches_the_controller_as_its_level() -> None:
    for name in RaidLevel.names():
        for spelled in (name, name.lower()):
            _, kw = sent(f'ADD UNIT 3 DATA="DISK8-DISK11" RAID_LEVEL={spelled}')
            assert kw["raid"] == RaidLevel.parse(name).value
    with pytest.raises(CommandError, match="RAID_LEVEL=7 not one of 0, 1, 10, 5, ADG"):
        run(Binding(), 'ADD UNIT 3 DATA="DISK8-DISK11" RAID_LEVEL=7')


# ------------------------------------------------------------------------------ one RAID vocabulary
def test_raid_levels_have_one_vocabulary() -> None:
    names: list[tuple[str | int, RaidLevel]] = [
        ("0", RaidLevel.RAID0), ("1", RaidLevel.RAID1), ("10", RaidLevel.RAID10), ("1+0", RaidLevel.RAID10),
        ("5", RaidLevel.RAID5), ("6", RaidLevel.ADG), ("adg", RaidLevel.ADG), (" ADG ", RaidLevel.ADG),
        (5, RaidLevel.RAID5)]
    for name, level in names:
        assert RaidLevel.parse(name) is level
    assert [(x.label, x.display) for x in RaidLevel] == [("0", "RAID 0"), ("1", "RAID 1"), ("1+0", "RAID 1+0"),
                                                         ("5", "RAID 5"), ("ADG", "RAID ADG")]
    for bad in ("7", "", "raid5", True):
        with pytest.raises(ValueError, match="unknown"):
            RaidLevel.parse(bad)
    assert render.raid("10") == render.raid("1+0") == "RAID 1+0" and render.raid(None) == "-"
    assert render.raid("weird") == "weird"


def test_the_controllers_raid_names_agree_with_the_vocabulary() -> None:
    """Until the controller's RAID_NAMES and raid_label are aliases of RaidLevel's."""
    assert set(ctl_module.RAID_NAMES) == {n.lower() for n in RaidLevel.names()}
    for name, level in ctl_module.RAID_NAMES.items():
        assert RaidLevel.parse(name) is level
    for level in RaidLevel:
        assert ctl_module.raid_label(level) == level.label


# ------------------------------------------------------------------------------ HELP
def _ctl(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(["ctl", "--api", "127.0.0.1:9", *argv])  # nothing listens there
        except SystemExit as exc:
            rc = int(exc.code or 0)
    return rc, out.getvalue() + err.getvalue()


def _summary_columns(lines: list[str]) -> set[int]:
    """Where the summary starts: after a usage on its line, or alone under a long usage."""
    cols = set()
    for line in lines:
        m = re.match(r"^  \S.*?\S {2,}(?=\S)", line)
        if m:
            cols.add(m.end())
        elif line.startswith("   "):
            cols.add(len(line) - len(line.lstrip()))
    return cols


def test_help_lists_every_command_with_a_summary_in_columns() -> None:
    reply = help_reply([])
    lines = reply.text.splitlines()
    usages = [f.usage for c in COMMANDS.values() for f in c.forms]
    assert [r["command"] for r in reply.result] == usages
    for usage in usages:
        assert any(line.strip().startswith(usage) for line in lines), usage
    assert all(r["summary"] for r in reply.result) and not REPR.search(reply.text)
    assert len(_summary_columns(lines[1:])) == 1, reply.text  # one column, however long a usage runs


def test_help_of_a_verb_shows_that_verbs_commands() -> None:
    fault = help_reply(["fault"])
    assert [r["command"] for r in fault.result] == [f.usage for f in COMMANDS["FAULT"].forms]
    assert {" ".join(r["command"].split()[:2]) for r in help_reply(["ADD"]).result} == {
        key for key in COMMANDS if key.startswith("ADD ")}
    assert [r["command"] for r in help_reply(["add", "unit"]).result] == [f.usage for f in COMMANDS["ADD UNIT"].forms]
    with pytest.raises(CommandError, match="HELP BOGUS: no such command"):
        help_reply(["bogus"])
    assert run(Binding(), "HELP FAULT").text == fault.text  # the API answers it the same


def test_ctl_help_needs_no_array_and_ctl_dash_dash_help_prints_the_language() -> None:
    rc, out = _ctl("HELP", "FAULT")
    assert rc == 0 and out.strip() == help_reply(["FAULT"]).text
    rc, out = _ctl("HELP", "NOTHING")
    assert rc == 1 and out.count("\n") == 1 and "HELP NOTHING: no such command" in out
    rc, out = _ctl("--help")
    assert rc == 0 and help_reply([]).text in out and "--api" in out


def test_logs_never_show_a_secret_option() -> None:
    from msa500_emu.management.grammar import redact

    assert redact("SET ALERTS SNMP=127.0.0.1:162 COMMUNITY=s3cret") == "SET ALERTS SNMP=127.0.0.1:162 COMMUNITY=***"
    assert redact("set alerts community='a b' syslog=x") == "set alerts community=*** syslog=x"
    assert redact("SHOW ALERTS") == "SHOW ALERTS"
