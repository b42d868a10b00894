"""The command language of `msa500-emu ctl`, in the style of the MSA family's CLI.

Words are case-insensitive; DISKm is bay m (1-14) and unit n is LUN n; sizes are binary (4GB is
4 GiB, a bare number MiB). Every command returns a JSON-able result and a plain rendering; a
wrong command raises CommandError with one line naming the problem. The same calls serve the
HTTP API.

COMMANDS is the grammar: each command's first words, its usage line and its handler; `run`
dispatches through it and nothing else, so a command exists exactly when it has a usage line.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import render


class CommandError(Exception):
    """A command that cannot run: the message is the one line the user sees."""


class Array(Protocol):
    """What the management layer needs from the emulator (the controller plus the process)."""

    def describe(self) -> dict[str, Any]: ...

    def disks(self) -> list[dict[str, Any]]: ...

    def units(self) -> list[dict[str, Any]]: ...

    def spares(self) -> list[dict[str, Any]]: ...

    def events(self, since_id: int = 0) -> list[dict[str, Any]]: ...

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a controller operation; raises CommandError with the controller's message.

        `op` is positional-only: operations take keyword arguments of any name (add_unit's name=).
        """
        ...


@dataclass
class Reply:
    result: Any
    text: str


@dataclass(frozen=True)
class Command:
    usage: str
    handler: Callable[[Array, list[str]], Reply]  # the words after the command's key words


RAID_LEVELS = {"0": "0", "1": "1", "10": "10", "1+0": "10", "5": "5", "ADG": "ADG", "6": "ADG"}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)(I?B)?$")


def _known() -> str:
    return "; ".join(USAGE.values())


def run(array: Array, line: str) -> Reply:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise CommandError(f"cannot parse {line!r}: {exc}") from exc
    if not words:
        raise CommandError("empty command (try SHOW GLOBALS)")
    up = [w.upper() for w in words]
    for n in (2, 1):
        key = " ".join(up[:n])
        if len(up) >= n and key in COMMANDS:
            return COMMANDS[key].handler(array, words[n:])
    if up[0] in _VERBS and len(words) > 1:
        raise CommandError(f"unknown command {up[0]} {words[1]!r} (known: {_known()})")
    raise CommandError(f"unknown command {words[0]!r} (known: {_known()})")


# -- parsing helpers ------------------------------------------------------------------------
def _options(words: list[str], allowed: set[str], usage: str) -> tuple[list[str], dict[str, str]]:
    """Split KEY=VALUE options (keys upper-cased) from positional words."""
    pos: list[str] = []
    opts: dict[str, str] = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            key = k.upper()
            if key not in allowed:
                raise CommandError(f"unknown option {k!r} (usage: {usage})")
            if key in opts:
                raise CommandError(f"option {key} given twice")
            opts[key] = v
        else:
            pos.append(w)
    return pos, opts


def _int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise CommandError(f"{what} {text!r} is not a number") from None
    if not lo <= n <= hi:
        raise CommandError(f"{what} {n} outside {lo}..{hi}")
    return n


def parse_disk(word: str) -> int:
    m = re.fullmatch(r"DISK(\d+)", word.strip().upper())
    if not m:
        raise CommandError(f"{word!r} is not a disk name (DISK1 .. DISK14)")
    bay = int(m.group(1))
    if not 1 <= bay <= 14:
        raise CommandError(f"{word} names bay {bay}; bays are 1-14")
    return bay


def parse_disks(spec: str) -> list[int]:
    """DISK1-DISK3, DISK1,DISK5 or a mix."""
    bays: list[int] = []
    for part in re.split(r"[,\s]+", spec.strip()):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            first, last = parse_disk(a), parse_disk(b)
            if last < first:
                raise CommandError(f"disk range {part} runs backwards")
            bays.extend(range(first, last + 1))
        else:
            bays.append(parse_disk(part))
    if not bays:
        raise CommandError("no disks given")
    if len(set(bays)) != len(bays):
        raise CommandError(f"a disk is named twice in {spec!r}")
    return bays


def parse_size(text: str) -> int:
    """Bytes from 8GB, 512MiB, 1.5T ... ; a bare number is MB, as the MSA CLI counted."""
    m = _SIZE.fullmatch(text.strip().upper())
    if not m:
        raise CommandError(f"size {text!r} not understood (e.g. 8GB, 512MB, 2048)")
    value, unit = float(m.group(1)), m.group(2) or "M"
    n = int(value * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit])
    if n <= 0:
        raise CommandError("size must be positive")
    return n


def _unit_number(words: list[str], usage: str) -> tuple[int, list[str]]:
    if not words:
        raise CommandError(f"unit number missing (usage: {usage})")
    return _int(words[0], "unit", 1, 32), words[1:]


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
    if obj == "EVENTS" and len(rest) <= 1:
        events = array.events()
        if rest:
            events = events[-_int(rest[0], "event count", 1, 100000) :]
        return Reply(events, render.events_text(events))
    raise CommandError(f"unknown SHOW command {' '.join(what)!r} ({USAGE['SHOW']})")


def _unit_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} UNIT"]
    lun, rest = _unit_number(words, usage)
    if verb == "ADD":
        pos, o = _options(rest, {"DATA", "RAID_LEVEL", "STRIPE_SIZE", "SIZE", "NAME", "ARRAY"}, usage)
        if pos:
            raise CommandError(f"unexpected {pos[0]!r} (usage: {usage})")
        if "DATA" not in o and "ARRAY" not in o:
            raise CommandError(f"DATA= missing (usage: {usage})")
        if "RAID_LEVEL" not in o:
            raise CommandError(f"RAID_LEVEL= missing (usage: {usage})")
        raid = RAID_LEVELS.get(o["RAID_LEVEL"].upper())
        if raid is None:
            raise CommandError(f"RAID_LEVEL={o['RAID_LEVEL']} not one of 0, 1, 10, 5, ADG")
        kw: dict[str, Any] = {"raid": raid}
        kw["bays"] = parse_disks(o["DATA"]) if "DATA" in o else []
        if "STRIPE_SIZE" in o:
            kw["stripe_kib"] = _int(o["STRIPE_SIZE"].upper().removesuffix("KB").removesuffix("K"),
                                    "STRIPE_SIZE", 16, 256)
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
        pos, o = _options(rest, {"DATA"}, usage)
        if pos or "DATA" not in o:
            raise CommandError(f"usage: {usage}")
        result = array.operate("expand_unit", lun, parse_disks(o["DATA"]))
        return Reply(result, f"Expansion of the array holding unit {lun} started.")
    pos, o = _options(rest, {"SIZE"}, usage)  # EXTEND
    if pos or "SIZE" not in o:
        raise CommandError(f"usage: {usage}")
    result = array.operate("extend_unit", lun, parse_size(o["SIZE"]))
    return Reply(result, f"Unit {lun} extended.")


def _no_more(rest: list[str], usage: str) -> None:
    if rest:
        raise CommandError(f"unexpected {rest[0]!r} (usage: {usage})")


def _spare_command(array: Array, words: list[str], verb: str) -> Reply:
    usage = USAGE[f"{verb} SPARE"]
    pos, o = _options(words, {"UNIT"}, usage)
    if "UNIT" not in o:
        raise CommandError(f"UNIT= missing (usage: {usage})")
    lun = _int(o["UNIT"], "unit", 1, 32)
    if not pos:
        raise CommandError(f"no disk given (usage: {usage})")
    bays = parse_disks(",".join(pos))
    op = "add_spare" if verb == "ADD" else "delete_spare"
    result = array.operate(op, lun, bays)
    names = ", ".join(f"DISK{b}" for b in bays)
    return Reply(result, f"Spare {names} {'added to' if verb == 'ADD' else 'removed from'} unit {lun}.")


def _set_globals(array: Array, words: list[str]) -> Reply:
    usage = USAGE["SET GLOBALS"]
    pos, o = _options(words, {"REBUILD_PRIORITY"}, usage)
    if pos or not o:
        raise CommandError(f"usage: {usage}")
    prio = o["REBUILD_PRIORITY"].lower()
    if prio not in ("high", "medium", "low"):
        raise CommandError(f"REBUILD_PRIORITY={o['REBUILD_PRIORITY']} not one of HIGH, MEDIUM, LOW")
    result = array.operate("set_rebuild_priority", prio)
    return Reply(result, f"Rebuild priority set to {prio.upper()}.")


def _set_cache(array: Array, words: list[str]) -> Reply:
    usage = USAGE["SET CACHE"]
    pos, o = _options(words, {"RATIO", "SIZE"}, usage)
    kw: dict[str, Any] = {}
    for w in pos:
        if w.upper() not in ("ENABLE", "DISABLE") or "enabled" in kw:
            raise CommandError(f"unexpected {w!r} (usage: {usage})")
        kw["enabled"] = w.upper() == "ENABLE"
    if "RATIO" in o:
        ratio = _int(o["RATIO"].rstrip("%"), "RATIO", 0, 100)
        if ratio % 25:
            raise CommandError("RATIO is the read share in steps of 25: 0, 25, 50, 75 or 100")
        kw["ratio_read_percent"] = ratio
    if "SIZE" in o:
        size = _int(o["SIZE"].upper().removesuffix("MB"), "SIZE", 1, 1 << 20)
        if size not in (128, 256):
            raise CommandError("SIZE is 128 or 256 (MB), the MSA500's cache modules")
        kw["size_mb"] = size
    if not kw:
        raise CommandError(f"usage: {usage}")
    result = array.operate("set_cache", **kw)
    return Reply(result, "Cache settings changed.")


def _rso(array: Array, words: list[str]) -> Reply:
    usage = USAGE["RSO"]
    if not words:
        raise CommandError(f"usage: {usage}")
    action = words[0].upper()
    pos, o = _options(words[1:], {"TIMEOUT", "ACT_ALONE"}, usage)
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
    target, action, args = words[0].upper(), words[1].upper(), words[2:]
    m = re.fullmatch(r"(PSU|FAN)(\d)", target)
    if m:
        if action not in ("FAIL", "RESTORE") or args:
            raise CommandError(f"usage: FAULT {m.group(1)}n FAIL|RESTORE")
        n = _int(m.group(2), m.group(1), 1, 2)
        result = array.operate(f"fault_{m.group(1).lower()}", n, action.lower())
        return Reply(result, f"{m.group(1)} {n}: {'failed' if action == 'FAIL' else 'restored'}.")
    m = re.fullmatch(r"LINK(\d)", target)
    if m:
        if action not in ("DOWN", "UP") or args:
            raise CommandError("usage: FAULT LINKn DOWN|UP (n: port 1 or 2)")
        port = _int(m.group(1), "port", 1, 2)
        result = array.operate("fault_link", port, action.lower())
        return Reply(result, f"Port {port} heartbeat link {action.lower()}.")
    if target == "BATTERY":
        if action not in ("FAIL", "REMOVE", "RESTORE", "LOW") or args:
            raise CommandError("usage: FAULT BATTERY FAIL|REMOVE|RESTORE|LOW")
        result = array.operate("fault_battery", action.lower())
        return Reply(result, f"Battery: {action.lower()} done.")
    if target == "SHELF":
        if action == "POWER-OFF":
            pos, o = _options(args, {"DURATION"}, "FAULT SHELF POWER-OFF [DURATION=seconds]")
            if pos:
                raise CommandError("usage: FAULT SHELF POWER-OFF [DURATION=seconds]")
            seconds = float(_int(o["DURATION"], "DURATION", 1, 30 * 86400)) if "DURATION" in o else None
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
        celsius = _int(words[1], "temperature", -40, 150)
        result = array.operate("set_temperature", celsius)
        return Reply(result, f"Temperature set to {celsius} C.")
    if not target.startswith("DISK"):
        raise CommandError(f"unknown fault target {words[0]!r} (DISKm, PSUn, FANn, TEMPERATURE, BATTERY, SHELF, LINKn)")
    bay = parse_disk(target)
    kw: dict[str, Any] = {}
    if action in ("FAIL", "PULL", "INSERT", "CLEAR"):
        _no_more(args, usage)
    elif action == "MEDIA-ERROR":
        if len(args) != 2:
            raise CommandError("usage: FAULT DISKm MEDIA-ERROR lba count")
        kw = {"lba": _int(args[0], "lba", 0, 1 << 48), "count": _int(args[1], "count", 1, 1 << 32)}
    elif action == "LATENCY":
        if len(args) != 1:
            raise CommandError("usage: FAULT DISKm LATENCY ms")
        kw = {"ms": _int(args[0], "latency", 0, 600000)}
    else:
        raise CommandError(f"unknown fault {words[1]!r} (usage: {usage})")
    result = array.operate("fault_disk", bay, action.lower(), **kw)
    return Reply(result, f"DISK{bay}: {action.lower()} done.")


COMMANDS: dict[str, Command] = {
    "SHOW": Command("SHOW GLOBALS | SHOW DISKS | SHOW UNITS | SHOW SPARES | SHOW EVENTS [n]", _show),
    "ADD UNIT": Command('ADD UNIT n DATA="DISKa-DISKb" RAID_LEVEL=0|1|1+0|10|5|ADG|6 [STRIPE_SIZE=k] [SIZE=s]'
                        ' [NAME=x] | ADD UNIT n ARRAY=a RAID_LEVEL=0|1|10|5|ADG [SIZE=s] [NAME=x]',
                        functools.partial(_unit_command, verb="ADD")),
    "DELETE UNIT": Command("DELETE UNIT n", functools.partial(_unit_command, verb="DELETE")),
    "ADD SPARE": Command("ADD SPARE UNIT=n DISKm [DISKk ...]", functools.partial(_spare_command, verb="ADD")),
    "DELETE SPARE": Command("DELETE SPARE UNIT=n DISKm [DISKk ...]",
                            functools.partial(_spare_command, verb="DELETE")),
    "EXPAND UNIT": Command('EXPAND UNIT n DATA="DISKa-DISKb"', functools.partial(_unit_command, verb="EXPAND")),
    "EXTEND UNIT": Command("EXTEND UNIT n SIZE=s", functools.partial(_unit_command, verb="EXTEND")),
    "SET GLOBALS": Command("SET GLOBALS REBUILD_PRIORITY=HIGH|MEDIUM|LOW", _set_globals),
    "SET CACHE": Command("SET CACHE [ENABLE|DISABLE] [RATIO=0|25|50|75|100] [SIZE=128|256]", _set_cache),
    "RSO": Command("RSO STATUS | RSO ENABLE [TIMEOUT=s] [ACT_ALONE=YES|NO] | RSO FAILOVER | RSO RESTORE"
                   " | RSO DISABLE", _rso),
    "FAULT": Command("FAULT DISKm FAIL | PULL | INSERT | MEDIA-ERROR lba count | LATENCY ms | CLEAR"
                     " | FAULT PSUn FAIL | RESTORE | FAULT FANn FAIL | RESTORE | FAULT TEMPERATURE c"
                     " | FAULT BATTERY LOW | FAIL | REMOVE | RESTORE"
                     " | FAULT SHELF POWER-OFF [DURATION=s] | FAULT SHELF POWER-ON | FAULT LINKn DOWN | UP", _fault),
}
USAGE = {key: c.usage for key, c in COMMANDS.items()}
_VERBS = {key.split()[0] for key in COMMANDS}
