"""The command language of `msa500-emu ctl`, in the style of the MSA family's CLI.

Words are case-insensitive; DISKm is bay m (1-14) and unit n is LUN n; sizes are binary (4GB is
4 GiB, a bare number MiB). Every command returns a JSON-able result and a plain rendering; a
wrong command raises CommandError with one line naming the problem. The same calls serve the
HTTP API. Every operation a command runs is a row of the registry (firmware_model.operations):
its limits and choices (bays, LUNs, latency, temperature, RAID levels...) are read from there, so
the language cannot allow what the controller refuses, nor refuse what it allows.

COMMANDS is the grammar: each command's first words, its usage forms (each with the operation it
runs and a one-line summary, which HELP prints) and its handler; `run` dispatches through it and
nothing else, so a command exists exactly when it has a usage line.
The usage notation (the README's Management block uses it too):
- ` | ` separates alternatives; one that does not start with the command's first word goes on
  from the first two words of the alternative before it (`FAULT DISKm FAIL | PULL`);
- `A|B|C` inside a word is a choice of that word (`REBUILD_PRIORITY=HIGH|MEDIUM|LOW`);
- `[...]` is optional, `...` repeats; a word with a lower-case letter is a placeholder (`n`,
  `DISKm`, `lba`), every other word is written as shown.
"""

from __future__ import annotations

import functools
import math
import re
import shlex
from typing import Any

from firmware_model import operations as ops
from firmware_model.raid.api import RaidLevel

from . import alert_commands, alua_commands, fault_commands, record_commands, render, snapshot_commands, unit_commands
from .grammar import (
    Array,
    Command,
    CommandError,
    Form,
    Reply,
    choices,
    limit,
    number,
    one_of,
    options,
    parse_disk,
    parse_disks,
    parse_size,
    unit_number,
    words_of,
)


def _known() -> str:
    return "; ".join(USAGE.values())


def run(array: Array, line: str) -> Reply:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot parse {line!r}: {exc}") from exc
    if not words:
        raise CommandError("empty command (try HELP or SHOW GLOBALS)")
    up = [w.upper() for w in words]
    for n in (2, 1):
        key = " ".join(up[:n])
        if len(up) >= n and key in COMMANDS:
            return COMMANDS[key].handler(array, words[n:])
    if up[0] in _VERBS and len(words) > 1:
        raise CommandError(f"unknown command {up[0]} {words[1]!r} (known: {_known()})")
    raise CommandError(f"unknown command {words[0]!r} (known: {_known()})")


# -- commands -------------------------------------------------------------------------------
def _show(array: Array, words: list[str]) -> Reply:
    what = [w.upper() for w in words]
    if not what:
        raise CommandError(f"SHOW what? ({USAGE['SHOW']})")
    obj, rest = what[0], what[1:]
    if obj == "GLOBALS" and not rest:
        g = array.describe()
        return Reply(g, render.globals_text(g))
    if obj == "DISKS" and not rest:
        disks = array.disks()
        return Reply(disks, render.disks_text(disks))
    if obj == "UNITS" and not rest:
        units = array.units()
        return Reply(units, render.units_text(units))
    if obj == "SPARES" and not rest:
        spares = array.spares()
        return Reply(spares, render.spares_text(spares))
    if obj == "CONNECTIONS" and not rest:
        conns = array.operate("connections")
        return Reply(conns, render.connections_text(conns))
    if obj == "ACL" and not rest:
        acl = array.operate("acl")
        return Reply(acl, render.acl_text(acl))
    if obj == "EVENTS" and len(rest) <= 1:
        events = array.events()
        if rest:
            events = events[-number(rest[0], "event count", limit("events", "limit")) :]
        return Reply(events, render.events_text(events))
    raise CommandError(f"unknown SHOW command {' '.join(what)!r} ({USAGE['SHOW']})")


def _unit_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} UNIT"]
    lun, rest = unit_number(words, usage)
    if verb == "ADD":
        pos, o = options(rest, {"DATA", "RAID_LEVEL", "STRIPE_SIZE", "SIZE", "NAME", "ARRAY"}, usage)
        if pos:
            raise CommandError(f"unexpected {pos[0]!r} (usage: {usage})")
        if "DATA" not in o and "ARRAY" not in o:
            raise CommandError(f"DATA= missing (usage: {usage})")
        if "RAID_LEVEL" not in o:
            raise CommandError(f"RAID_LEVEL= missing (usage: {usage})")
        try:
            kw: dict[str, Any] = {"raid": RaidLevel.parse(o["RAID_LEVEL"]).value}
        except ValueError:
            raise CommandError(f"RAID_LEVEL={o['RAID_LEVEL']} not one of {', '.join(RaidLevel)}") from None
        kw["bays"] = parse_disks(o["DATA"]) if "DATA" in o else []
        if "STRIPE_SIZE" in o:
            kw["stripe_kib"] = one_of(o["STRIPE_SIZE"].upper().removesuffix("KB").removesuffix("K"),
                                       "STRIPE_SIZE", choices("add_unit", "stripe_kib"))
        if "SIZE" in o:
            kw["size_bytes"] = parse_size(o["SIZE"])
        if "NAME" in o:
            kw["name"] = o["NAME"]
        if "ARRAY" in o:
            kw["array"] = o["ARRAY"].upper()
        result = array.operate("add_unit", lun, **kw)
        return Reply(result, f"Unit {lun} created (LUN {lun}).")
    if verb == "DELETE":
        _no_more(rest, usage)
        result = array.operate("delete_unit", lun)
        return Reply(result, f"Unit {lun} deleted.")
    if verb == "EXPAND":
        pos, o = options(rest, {"DATA"}, usage)
        if pos or "DATA" not in o:
            raise CommandError(f"usage: {usage}")
        result = array.operate("expand_unit", lun, parse_disks(o["DATA"]))
        return Reply(result, f"Expansion of the array holding unit {lun} started.")
    pos, o = options(rest, {"SIZE"}, usage)  # EXTEND
    if pos or "SIZE" not in o:
        raise CommandError(f"usage: {usage}")
    result = array.operate("extend_unit", lun, parse_size(o["SIZE"]))
    return Reply(result, f"Unit {lun} extended.")


def _no_more(rest: list[str], usage: str) -> None:
    if rest:
        raise CommandError(f"unexpected {rest[0]!r} (usage: {usage})")


def _spare_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} SPARE"]
    pos, o = options(words, {"UNIT"}, usage)
    if "UNIT" not in o:
        raise CommandError(f"UNIT= missing (usage: {usage})")
    lun = number(o["UNIT"], "unit", ops.LUNS)
    if not pos:
        raise CommandError(f"no disk given (usage: {usage})")
    bays = parse_disks(",".join(pos))
    op = "add_spare" if verb == "ADD" else "delete_spare"
    result = array.operate(op, lun, bays)
    names = ", ".join(f"DISK{b}" for b in bays)
    return Reply(result, f"Spare {names} {'added to' if verb == 'ADD' else 'removed from'} unit {lun}.")


def _connection_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} CONNECTION"]
    pos, o = options(words, {"IQN", "PORT"} if verb == "ADD" else set(), usage)
    if len(pos) != 1:
        raise CommandError(f"{'connection name missing' if not pos else f'unexpected {pos[1]!r}'} (usage: {usage})")
    name = pos[0]
    if verb == "DELETE":
        result = array.operate("delete_connection", name)
        return Reply(result, f"Connection {name} deleted.")
    if "IQN" not in o:
        raise CommandError(f"IQN= missing (usage: {usage})")
    port = o.get("PORT", "ANY")
    kw: dict[str, Any] = {}
    if port.upper() != "ANY":
        kw["port"] = number(port, "PORT", limit("add_connection", "port"))
    result = array.operate("add_connection", name, o["IQN"], **kw)
    where = f"port {kw['port']}" if kw else "either port"
    return Reply(result, f"Connection {name} added: {o['IQN']} on {where}.")


def _acl_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} ACL"]
    pos, o = options(words, {"CONNECTION", "UNIT"}, usage)
    _no_more(pos, usage)
    for key in ("CONNECTION", "UNIT"):
        if key not in o:
            raise CommandError(f"{key}= missing (usage: {usage})")
    lun = number(o["UNIT"], "unit", ops.LUNS)
    result = array.operate("add_acl" if verb == "ADD" else "delete_acl", o["CONNECTION"], lun)
    if verb == "ADD":
        return Reply(result, f"Unit {lun} presented to connection {o['CONNECTION']}.")
    return Reply(result, f"Unit {lun} no longer presented to connection {o['CONNECTION']}.")


def _set_port(array: Array, words: list[str]) -> Reply:
    usage = USAGE["SET PORT"]
    pos, o = options(words, {"ACCESS"}, usage)
    if len(pos) != 1 or "ACCESS" not in o:
        raise CommandError(f"usage: {usage}")
    port = number(pos[0], "port", limit("set_port_access", "port"))
    access = o["ACCESS"].lower()
    if access not in choices("set_port_access", "access"):
        raise CommandError(f"ACCESS={o['ACCESS']} not one of {words_of(choices('set_port_access', 'access'), ', ')}")
    result = array.operate("set_port_access", port, access)
    return Reply(result, f"Port {port} access: {access.upper()}.")


def _set_globals(array: Array, words: list[str]) -> Reply:
    usage = USAGE["SET GLOBALS"]
    pos, o = options(words, {"REBUILD_PRIORITY"}, usage)
    if pos or not o:
        raise CommandError(f"usage: {usage}")
    prio = o["REBUILD_PRIORITY"].lower()
    if prio not in choices("set_rebuild_priority", "priority"):
        raise CommandError(f"REBUILD_PRIORITY={o['REBUILD_PRIORITY']} not one of "
                           f"{words_of(choices('set_rebuild_priority', 'priority'), ', ')}")
    result = array.operate("set_rebuild_priority", prio)
    return Reply(result, f"Rebuild priority set to {prio.upper()}.")


def _set_cache(array: Array, words: list[str]) -> Reply:
    usage = USAGE["SET CACHE"]
    pos, o = options(words, {"RATIO", "SIZE"}, usage)
    kw: dict[str, Any] = {}
    for w in pos:
        if w.upper() not in ("ENABLE", "DISABLE") or "enabled" in kw:
            raise CommandError(f"unexpected {w!r} (usage: {usage})")
        kw["enabled"] = w.upper() == "ENABLE"
    if "RATIO" in o:  # the read share, percent
        kw["ratio_read_percent"] = one_of(o["RATIO"].rstrip("%"), "RATIO", choices("set_cache", "ratio_read_percent"))
    if "SIZE" in o:  # MB: the product's cache modules (the model accepts more, for tests)
        kw["size_mb"] = one_of(o["SIZE"].upper().removesuffix("MB"), "SIZE", ops.CACHE_MODULES_MB)
    if not kw:
        raise CommandError(f"usage: {usage}")
    result = array.operate("set_cache", **kw)
    return Reply(result, "Cache settings changed.")


def _rso(array: Array, words: list[str]) -> Reply:
    usage = USAGE["RSO"]
    if not words:
        raise CommandError(f"usage: {usage}")
    action = words[0].upper()
    pos, o = options(words[1:], {"TIMEOUT", "ACT_ALONE"}, usage)
    if pos:
        raise CommandError(f"unexpected {pos[0]!r} (usage: {usage})")
    if action == "STATUS" and not o:
        st = array.operate("rso_status")
        return Reply(st, render.rso_text(st))
    if action == "ENABLE":
        kw: dict[str, Any] = {"enabled": True}
        if "TIMEOUT" in o:
            try:
                kw["timeout_s"] = float(o["TIMEOUT"].lower().removesuffix("s"))
            except ValueError:
                raise CommandError(f"TIMEOUT={o['TIMEOUT']} is not a number of seconds") from None
            if not math.isfinite(kw["timeout_s"]):
                raise CommandError(f"TIMEOUT={o['TIMEOUT']} is not a number of seconds")
            if kw["timeout_s"] not in limit("rso_configure", "timeout_s"):
                raise CommandError(f"TIMEOUT={o['TIMEOUT']} outside {limit('rso_configure', 'timeout_s')} seconds")
        if "ACT_ALONE" in o:
            if o["ACT_ALONE"].upper() not in ("YES", "NO"):
                raise CommandError("ACT_ALONE=YES or NO")
            kw["act_alone"] = o["ACT_ALONE"].upper() == "YES"
        st = array.operate("rso_configure", **kw)
        return Reply(st, "RSO enabled: port 1 primary, port 2 recovery.")
    if o:
        raise CommandError(f"usage: {usage}")
    if action == "DISABLE":
        return Reply(array.operate("rso_configure", enabled=False), "RSO disabled: both ports reach the units.")
    if action == "FAILOVER":
        return Reply(array.operate("rso_failover"), "Failover: port 1 fenced, port 2 active.")
    if action == "RESTORE":
        return Reply(array.operate("rso_restore"), "Restored: port 1 active, port 2 listening.")
    raise CommandError(f"unknown RSO command {words[0]!r} (usage: {usage})")


def _fault(array: Array, words: list[str]) -> Reply:
    usage = USAGE["FAULT"]
    if len(words) < 2:
        raise CommandError(f"usage: {usage}")
    if fault_commands.handles(words[0]):  # FAULT PORTn ..., FAULT SESSION ...: path faults
        return fault_commands.fault(array, words)
    target, action, args = words[0].upper(), words[1].upper(), words[2:]
    m = re.fullmatch(r"(PSU|FAN)(\d+)", target)
    if m:
        op = f"fault_{m.group(1).lower()}"
        if action.lower() not in choices(op, "action") or args:
            raise CommandError(f"usage: FAULT {m.group(1)}n {words_of(choices(op, 'action'))}")
        n = number(m.group(2), m.group(1), limit(op, "n"))
        result = array.operate(op, n, action.lower())
        return Reply(result, f"{m.group(1)} {n}: {'failed' if action == 'FAIL' else 'restored'}.")
    m = re.fullmatch(r"LINK(\d+)", target)
    if m:
        if action.lower() not in choices("fault_link", "action") or args:
            raise CommandError(f"usage: FAULT LINKn {words_of(choices('fault_link', 'action'))} "
                               f"(n: port {limit('fault_link', 'port')})")
        port = number(m.group(1), "port", limit("fault_link", "port"))
        result = array.operate("fault_link", port, action.lower())
        return Reply(result, f"Port {port} heartbeat link {action.lower()}.")
    if target == "BATTERY":
        if action.lower() not in choices("fault_battery", "action") or args:
            raise CommandError(f"usage: FAULT BATTERY {words_of(choices('fault_battery', 'action'))}")
        result = array.operate("fault_battery", action.lower())
        return Reply(result, f"Battery: {action.lower()} done.")
    if target == "SHELF":
        if action == "POWER-OFF":
            pos, o = options(args, {"DURATION"}, "FAULT SHELF POWER-OFF [DURATION=seconds]")
            if pos:
                raise CommandError("usage: FAULT SHELF POWER-OFF [DURATION=seconds]")
            seconds = float(number(o["DURATION"], "DURATION", limit("power_off", "duration"))) if "DURATION" in o \
                else None
            result = array.operate("power_off", duration=seconds)
            tail = f" for {seconds:.0f} s" if seconds else ""
            return Reply(result, f"Shelf powered off{tail}.")
        if action == "POWER-ON" and not args:
            result = array.operate("power_on")
            return Reply(result, "Shelf powered on.")
        raise CommandError("usage: FAULT SHELF POWER-OFF [DURATION=seconds] | FAULT SHELF POWER-ON")
    if target == "TEMPERATURE":
        if args:
            raise CommandError("usage: FAULT TEMPERATURE c (degrees Celsius)")
        celsius = number(words[1], "temperature", limit("set_temperature", "celsius"))
        result = array.operate("set_temperature", celsius)
        return Reply(result, f"Temperature set to {celsius} C.")
    if not target.startswith("DISK"):
        raise CommandError(f"unknown fault target {words[0]!r} "
                           "(DISKm, PSUn, FANn, TEMPERATURE, BATTERY, SHELF, LINKn, PORTn, SESSION)")
    bay = parse_disk(target)
    kw: dict[str, Any] = {}
    if action in ("FAIL", "PULL", "INSERT", "CLEAR"):
        _no_more(args, usage)
    elif action == "MEDIA-ERROR":
        if len(args) != 2:
            raise CommandError("usage: FAULT DISKm MEDIA-ERROR lba count")
        kw = {"lba": number(args[0], "lba", limit("fault_disk", "lba")),
              "count": number(args[1], "count", limit("fault_disk", "count"))}
    elif action == "LATENCY":
        if len(args) != 1:
            raise CommandError("usage: FAULT DISKm LATENCY ms")
        kw = {"ms": number(args[0], "latency", limit("fault_disk", "ms"))}
    else:
        raise CommandError(f"unknown fault {words[1]!r} (usage: {usage})")
    result = array.operate("fault_disk", bay, action.lower(), **kw)
    return Reply(result, f"DISK{bay}: {action.lower()} done.")


def _help(array: Array, words: list[str]) -> Reply:
    return help_reply(words)


def help_reply(words: list[str]) -> Reply:
    """HELP [verb]: every command (or one verb's) with its usage and summary; needs no array."""
    topic = " ".join(w.upper() for w in words)
    rows = [(f.usage, f.text) for key, c in COMMANDS.items() for f in c.forms
            if not topic or topic in (key, key.split()[0]) or f.usage.upper().startswith(topic + " ")]
    if not rows:
        raise CommandError(f"HELP {topic}: no such command ({COMMANDS['HELP'].usage})")
    head = "Commands (case-insensitive; DISKm is bay m, unit n is LUN n; A | B, A|B: either; [...]: optional):"
    return Reply([{"command": u, "summary": t} for u, t in rows], "\n".join([head, render.help_text(rows)]))


_DISK_FAULT = (f"fail, pull, insert the drive in bay m ({ops.BAYS}); a media error at lba for count blocks; "
               f"ms ({limit('fault_disk', 'ms')}) latency per I/O; clear its faults")
_RSO_ENABLE = f"enable RSO: port 1 primary, port 2 recovery; s: heartbeat timeout ({ops.RSO_TIMEOUT_S} s)"
COMMANDS: dict[str, Command] = {
    "SHOW": Command(_show, (Form("SHOW GLOBALS", "describe"), Form("SHOW DISKS", "disks"),
                            Form("SHOW UNITS", "units"), Form("SHOW SPARES", "spares"),
                            Form("SHOW CONNECTIONS", "connections"), Form("SHOW ACL", "acl"),
                            Form("SHOW EVENTS [n]", "events",
                                 f"the event log, or its last n events ({limit('events', 'limit')})"))),
    "ADD UNIT": Command(functools.partial(_unit_command, verb="ADD"), (
        Form(f'ADD UNIT n DATA="DISKa-DISKb" RAID_LEVEL={"|".join(RaidLevel.names())} [STRIPE_SIZE=k] [SIZE=s]'
             " [NAME=x]", "add_unit", f"create unit n ({ops.LUNS}) on a new array of unassigned drives; "
             f"stripe k KiB ({words_of(choices('add_unit', 'stripe_kib'))}), size s (default: all of it)"),
        Form(f"ADD UNIT n ARRAY=a RAID_LEVEL={'|'.join(RaidLevel)} [SIZE=s] [NAME=x]", "add_unit",
             "create unit n on the free space of array a (SHOW UNITS names the arrays)"))),
    "DELETE UNIT": Command(functools.partial(_unit_command, verb="DELETE"), (Form("DELETE UNIT n", "delete_unit"),)),
    "ADD SPARE": Command(functools.partial(_spare_command, verb="ADD"),
                         (Form("ADD SPARE UNIT=n DISKm [DISKk ...]", "add_spare"),)),
    "DELETE SPARE": Command(functools.partial(_spare_command, verb="DELETE"),
                            (Form("DELETE SPARE UNIT=n DISKm [DISKk ...]", "delete_spare"),)),
    "EXPAND UNIT": Command(functools.partial(_unit_command, verb="EXPAND"),
                           (Form('EXPAND UNIT n DATA="DISKa-DISKb"', "expand_unit"),)),
    "EXTEND UNIT": Command(functools.partial(_unit_command, verb="EXTEND"),
                           (Form("EXTEND UNIT n SIZE=s", "extend_unit"),)),
    "ADD CONNECTION": Command(functools.partial(_connection_command, verb="ADD"), (
        Form("ADD CONNECTION name IQN=iqn [PORT=1|2|ANY]", "add_connection",
             f"name a host by its initiator IQN, on port 1, 2 or either (name: 1-{ops.CONNECTION_NAME_MAX} "
             f"letters, digits, -_.; at most {ops.MAX_CONNECTIONS})"),)),
    "DELETE CONNECTION": Command(functools.partial(_connection_command, verb="DELETE"),
                                 (Form("DELETE CONNECTION name", "delete_connection"),)),
    "ADD ACL": Command(functools.partial(_acl_command, verb="ADD"),
                       (Form("ADD ACL CONNECTION=name UNIT=n", "add_acl"),)),
    "DELETE ACL": Command(functools.partial(_acl_command, verb="DELETE"),
                          (Form("DELETE ACL CONNECTION=name UNIT=n", "delete_acl"),)),
    "SET PORT": Command(_set_port, (
        Form(f"SET PORT n ACCESS={words_of(choices('set_port_access', 'access'))}", "set_port_access",
             f"who may log in on port n ({ops.PORTS}): anyone, or only the initiators of its connections"),)),
    "SET GLOBALS": Command(_set_globals, (
        Form(f"SET GLOBALS REBUILD_PRIORITY={words_of(choices('set_rebuild_priority', 'priority'))}",
             "set_rebuild_priority"),)),
    "SET CACHE": Command(_set_cache, (
        Form(f"SET CACHE [ENABLE|DISABLE] [RATIO={words_of(choices('set_cache', 'ratio_read_percent'))}]"
             f" [SIZE={words_of(ops.CACHE_MODULES_MB)}]", "set_cache",
             "the array accelerator: on or off, its read share in percent, its size in MB"),)),
    "RSO": Command(_rso, (Form("RSO STATUS", "rso_status"),
                          Form("RSO ENABLE [TIMEOUT=s] [ACT_ALONE=YES|NO]", "rso_configure", _RSO_ENABLE),
                          Form("RSO FAILOVER", "rso_failover"), Form("RSO RESTORE", "rso_restore"),
                          Form("RSO DISABLE", "rso_configure", "disable RSO: both ports reach the units"))),
    "FAULT": Command(_fault, (
        Form("FAULT DISKm FAIL | PULL | INSERT | MEDIA-ERROR lba count | LATENCY ms | CLEAR", "fault_disk",
             _DISK_FAULT),
        Form(f"FAULT PSUn {words_of(choices('fault_psu', 'action'), ' | ')}", "fault_psu"),
        Form(f"FAULT FANn {words_of(choices('fault_fan', 'action'), ' | ')}", "fault_fan"),
        Form("FAULT TEMPERATURE c", "set_temperature",
             f"set the enclosure temperature to c degrees C ({limit('set_temperature', 'celsius')})"),
        Form(f"FAULT BATTERY {words_of(choices('fault_battery', 'action'), ' | ')}", "fault_battery"),
        Form("FAULT SHELF POWER-OFF [DURATION=s]", "power_off"),
        Form("FAULT SHELF POWER-ON", "power_on"),
        Form(f"FAULT LINKn {words_of(choices('fault_link', 'action'), ' | ')}", "fault_link"),
        *fault_commands.FAULT_FORMS)),
}
COMMANDS.update(unit_commands.COMMANDS)  # SHOW UNIT n
COMMANDS.update(alua_commands.COMMANDS)  # ALUA STATUS, TRANSITION=ms, PORTn state
COMMANDS.update(alert_commands.COMMANDS)  # SHOW ALERTS, SET ALERTS
COMMANDS.update(fault_commands.COMMANDS)  # INJECT UNIT, SHOW INJECTIONS, SHOW FAULTS, DELETE INJECTION
COMMANDS.update(snapshot_commands.COMMANDS)  # SNAPSHOT SAVE/RESTORE/LIST/DELETE, RESET
COMMANDS.update(record_commands.COMMANDS)  # RECORD START/STOP/STATUS/APPLY (docs/recording.md)
_VERBS = {key.split()[0] for key in COMMANDS} | {"HELP"}
COMMANDS["HELP"] = Command(_help, (Form(f"HELP [{'|'.join(dict.fromkeys(k.split()[0] for k in COMMANDS))}]",
                                        summary="these lines, or only those of one verb"),))
USAGE = {key: c.usage for key, c in COMMANDS.items()}
