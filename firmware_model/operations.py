"""The registry of operations: the one way into the controller from outside.

Everything the command language, the HTTP API, the web panel, scenario files and the pytest plugin
may ask of the array is one row of OPERATIONS: its name, who runs it (a Controller method, or
the process for shelf power, which also drops and reopens the iSCSI portals), its arguments with
types and limits, whether it changes what the controller keeps in NVRAM and on the drives, and
a one-line summary. `bind` checks a call against its row before anything runs and answers a bad
one with one line (OperationError) naming the operation and the problem.

The limits below are the single definitions (or re-export them from the firmware module that owns
them: bays, power supplies, fans, cache ratios, RSO timeout): the rows and the command language
read them, and so do the controller's own checks, so no caller can allow what another refuses.
Pure: it imports nothing from msa500_emu, and nothing from firmware_model.controller, which reads
its limits from here (importing it back would be a cycle).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar

from .cache import RATIOS
from .enclosure import BAY_COUNT, FAN_COUNT, PSU_COUNT
from .metadata import METADATA_BYTES
from .raid.api import RaidLevel
from .rso import MAX_TIMEOUT_S, MIN_TIMEOUT_S
from .scsi.alua import MAX_TRANSITION_MS, PORT_ALUA_STATES
from .scsi.injection import ErrorKind

N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Limit(Generic[N]):
    """An inclusive range; `x in limit` tests it."""

    lo: N
    hi: N

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.lo <= value <= self.hi

    def __str__(self) -> str:
        return f"{_num(self.lo)}..{_num(self.hi)}"


@dataclass(frozen=True)
class AtLeast(Generic[N]):
    """A lower bound only (sizes, event ids)."""

    lo: N

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and self.lo <= value

    def __str__(self) -> str:
        return f"at least {_num(self.lo)}"


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------ the limits
BLOCK_SIZE = 512
MIB = 1 << 20
BAYS = Limit(1, BAY_COUNT)  # DISK1 .. DISK14
PSUS = Limit(1, PSU_COUNT)
FANS = Limit(1, FAN_COUNT)
PORT_COUNT = 2
PORTS = Limit(1, PORT_COUNT)
MAX_LUNS = 32  # logical drives are LUN 1 .. 32 (LUN 0 is the controller)
LUNS = Limit(1, MAX_LUNS)
STRIPE_KIB = (16, 32, 64, 128, 256)
DEFAULT_STRIPE_KIB = 64
NAME_MAX = 64  # a logical drive's name: printable characters
MIN_UNIT_BYTES = 8 * BLOCK_SIZE  # the smallest logical drive, 4 KiB
MIN_DRIVE_BYTES = METADATA_BYTES + 16 * MIB  # a blank drive inserted by fault injection
LATENCY_MS = Limit(0, 60000)  # injected per-I/O drive latency: a minute already outlasts every initiator timeout
TEMPERATURE_C = Limit(-40, 120)  # what the enclosure's sensor reports
MEDIA_ERROR_LBA = Limit(0, 1 << 48)  # 512-byte blocks of the drive's data area
MEDIA_ERROR_COUNT = Limit(1, 1 << 32)
CACHE_RATIOS = RATIOS  # the read share, percent, as ACU offers it
CACHE_MODULES_MB = (128, 256)  # the MSA500's cache modules: what the command language and the config offer
CACHE_SIZE_MB = Limit(1, 1024)  # what the model accepts (tests run with small caches)
RSO_TIMEOUT_S = Limit(MIN_TIMEOUT_S, MAX_TIMEOUT_S)
ALUA_TRANSITION_MS = Limit(0, MAX_TRANSITION_MS)  # how long a port's access state change stays transitioning
PORT_ALUA = tuple(PORT_ALUA_STATES)  # a port fault's access states ("active": none)
POWER_OFF_S = Limit(1, 30 * 86400)  # a timed power cut, then power comes back by itself
EVENTS_LIMIT = Limit(1, 100000)
REBUILD_PRIORITIES = ("high", "medium", "low")
#: fault_disk's actions, each with the keyword arguments it takes
DISK_FAULTS: dict[str, tuple[str, ...]] = {
    "fail": (), "pull": (), "insert": ("serial", "new", "size_bytes"), "media-error": ("lba", "count"),
    "latency": ("ms",), "predictive": (), "clear": (),
}
COMPONENT_ACTIONS = ("fail", "restore")  # power supplies and fans
BATTERY_ACTIONS = ("low", "fail", "remove", "restore")
LINK_ACTIONS = ("down", "up")
MAX_CONNECTIONS = 64  # host connections (ADD CONNECTION), as the MSA CLI keeps them
CONNECTION_NAME_MAX = 32  # letters, digits, '-', '_', '.' (firmware_model.controller.access checks the characters)
IQN_MAX = 223  # an iSCSI name's longest (RFC 3720 3.2.6.1)
PORT_ACCESS = ("all", "connections")  # who may log in on a port: anyone, or the connections' initiators
PORT_FAULTS = ("down", "up", "reset", "blackhole", "delay", "flap", "clear")  # FAULT PORTn (iscsi/path_faults.py)
SESSION_FAULTS = ("reinstate", "clear")  # FAULT SESSION INITIATOR=iqn
PORT_DELAY_MS = Limit(1, 60000)  # every response of a port held this long
FLAP_S = Limit(1, 3600)  # a flapping port goes down and up every this many seconds
INJECT_ERRORS = tuple(k.value for k in ErrorKind)  # INJECT ... ERROR= (firmware_model.scsi.injection)
INJECT_COUNT = Limit(1, 1 << 31)  # how many commands an injection answers (or always)
INJECT_LBA = Limit(0, (1 << 64) - 1)
INJECT_DELAY_MS = Limit(1, 600000)  # ERROR=DELAY: ten minutes outlast every initiator's command timeout
ALERT_TARGETS_MAX = 2048  # SET ALERTS: one comma-separated list of addresses or URLs
RECORD_FILE_MAX = 4096  # RECORD START file: a path
SNAPSHOT_NAME_MAX = 32  # SNAPSHOT SAVE name: letters, digits, ._- (msa500_emu.snapshot checks the characters)


# ------------------------------------------------------------------------------ the rows
class OperationError(ValueError):
    """A call the registry refuses: the message is one line naming the operation and the problem."""


class Kind(StrEnum):
    INT = "a whole number"
    NUMBER = "a number"
    BOOL = "true or false"
    TEXT = "text"
    BAYS = "a list of bay numbers"
    RAID = "a RAID level"


class Owner(StrEnum):
    CONTROLLER = "controller"  # a method of firmware_model.controller.Controller
    PROCESS = "process"  # a method of the emulator process (msa500_emu.server.Emulator)


@dataclass(frozen=True)
class Arg:
    """One argument: the handler's parameter name, its kind and what values it may take.

    `only_for`: a keyword that belongs to some values of the operation's `action` argument only
    (fault_disk's lba, count, ms...); `required` then means required for those.
    """

    name: str
    kind: Kind
    limit: Limit[Any] | AtLeast[Any] | None = None
    choices: tuple[Any, ...] = ()
    required: bool = True
    multiple: int = 0  # the value is a multiple of this (sizes: whole 512-byte blocks)
    max_len: int = 0  # TEXT: at most this many characters
    only_for: tuple[str, ...] = ()

    def check(self, value: Any) -> Any:
        """The value as the handler takes it, or OperationError (without the operation's name)."""
        what = f"{self.name} {value!r}"
        kind = self.kind
        if kind is Kind.BOOL and not isinstance(value, bool):
            raise OperationError(f"{what} is not {kind}")
        if kind in (Kind.INT, Kind.NUMBER) and not _is_number(value, kind is Kind.INT):
            raise OperationError(f"{what} is not {kind}")
        if kind in (Kind.TEXT, Kind.RAID) and not isinstance(value, str):
            if kind is Kind.TEXT or not isinstance(value, int) or isinstance(value, bool):
                raise OperationError(f"{what} is not {kind}")
        if kind is Kind.TEXT:
            if self.max_len and len(value) > self.max_len:
                raise OperationError(f"{self.name}: at most {self.max_len} characters")
            if not value.isprintable():
                raise OperationError(f"{self.name}: printable characters only")
        if kind is Kind.RAID:
            try:
                RaidLevel.parse(value)
            except ValueError as exc:
                raise OperationError(str(exc)) from None
        if kind is Kind.BAYS:
            if not isinstance(value, list | tuple):
                raise OperationError(f"{what} is not {kind}")
            for bay in value:
                if not _is_number(bay, True) or bay not in (self.limit or BAYS):
                    raise OperationError(f"{self.name}: bay {bay!r} outside {self.limit or BAYS}")
            return list(value)
        if self.choices:
            key = value.lower() if isinstance(value, str) else value
            if key not in self.choices:
                raise OperationError(f"{what} not one of {', '.join(map(str, self.choices))}")
            return key
        if self.limit is not None and value not in self.limit:
            raise OperationError(f"{self.name} {_num(value)}{' outside' if isinstance(self.limit, Limit) else ':'} "
                                 f"{self.limit}")
        if self.multiple and value % self.multiple:
            raise OperationError(f"{self.name} {value} is not a multiple of {self.multiple}")
        return value

    @property
    def usage(self) -> str:
        if self.choices or self.kind is Kind.RAID:
            shape = "|".join(map(str, self.choices or RaidLevel.names()))
        elif self.limit is not None:
            hi = _num(self.limit.hi) if isinstance(self.limit, Limit) else ""
            shape = f"{_num(self.limit.lo)}..{hi}" + (",..." if self.kind is Kind.BAYS else "")
        else:
            shape = self.kind.name.lower()
        text = f"{self.name}={shape}"
        return text if self.required and not self.only_for else f"[{text}]"


def _is_number(value: Any, whole: bool) -> bool:
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class Operation:
    name: str
    args: tuple[Arg, ...]
    persists: bool  # changes what the controller keeps in NVRAM or on the drives
    summary: str
    owner: Owner = Owner.CONTROLLER
    handler: str = ""  # the owner's method; "" when it is `name`

    @property
    def method(self) -> str:
        return self.handler or self.name

    @property
    def usage(self) -> str:
        """`fault_psu n=1..2 action=fail|restore`: the operation and its arguments."""
        return " ".join([self.name, *(a.usage for a in self.args)])

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(f"{self.name} has no argument {name}")

    def bind(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The checked keyword arguments to call the handler with (those given, in the row's order)."""
        kwargs = dict(kwargs or {})
        positional = [a for a in self.args if not a.only_for]
        if len(args) > len(positional):
            listed = ", ".join(a.name for a in positional) or "no arguments"
            raise OperationError(f"{self.name}: takes {len(positional)} positional arguments ({listed}), "
                                 f"got {len(args)}")
        given: dict[str, Any] = {}
        for a, value in zip(positional, args, strict=False):
            given[a.name] = value
        for key, value in kwargs.items():
            if not any(a.name == key for a in self.args):
                known = ", ".join(a.name for a in self.args) or "none"
                raise OperationError(f"{self.name}: unknown argument {key!r} (arguments: {known})")
            if key in given:
                raise OperationError(f"{self.name}: argument {key} given twice")
            given[key] = value
        try:
            return self._check(given)
        except OperationError as exc:
            raise OperationError(f"{self.name}: {exc}") from None

    def _check(self, given: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in self.args:  # action-like arguments come before the keywords that depend on them
            value = given.get(a.name)
            applies = not a.only_for or out.get("action") in a.only_for
            if value is None:
                if a.required and applies:
                    for_what = f" for {out['action']}" if a.only_for else ""
                    raise OperationError(f"argument {a.name} missing{for_what}")
                if a.name in given:
                    out[a.name] = None
                continue
            if not applies:
                raise OperationError(f"{a.name} goes with {' or '.join(a.only_for)} only")
            out[a.name] = a.check(value)
        return out


def _op(name: str, summary: str, *args: Arg, persists: bool = True, owner: Owner = Owner.CONTROLLER) -> Operation:
    return Operation(name, args, persists, summary, owner)


_LUN = Arg("lun", Kind.INT, LUNS)
_BAYS = Arg("bays", Kind.BAYS, BAYS)
_CONN = Arg("name", Kind.TEXT, max_len=CONNECTION_NAME_MAX)
_SIZE = Arg("size_bytes", Kind.INT, AtLeast(MIN_UNIT_BYTES), multiple=BLOCK_SIZE)

OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    # -- views
    _op("describe", "the shelf: identity, power, temperature, cache, battery, ports, RSO, units",
        persists=False, owner=Owner.PROCESS),
    _op("disks", "every bay: its drive's size, state, role, array, serial, injected faults", persists=False),
    _op("units", "every logical drive: RAID level, stripe, size, state, tolerance, drives, spares",
        persists=False),
    _op("spares", "the spare drives, the arrays they serve, what they replace", persists=False),
    _op("events", "the event log, oldest first",
        Arg("since_id", Kind.INT, AtLeast(0), required=False),
        Arg("limit", Kind.INT, EVENTS_LIMIT, required=False), persists=False),
    # -- configuration
    _op("add_unit", f"create a logical drive (LUN {LUNS}) on a new array of unassigned drives or on an "
                    "array's free space",
        _LUN, Arg("bays", Kind.BAYS, BAYS, required=False), Arg("raid", Kind.RAID, required=False),
        Arg("stripe_kib", Kind.INT, choices=STRIPE_KIB, required=False), replace(_SIZE, required=False),
        Arg("name", Kind.TEXT, max_len=NAME_MAX, required=False), Arg("array", Kind.TEXT, required=False)),
    _op("delete_unit", "delete a logical drive (its array goes with its last one)", _LUN),
    _op("add_spare", "make drives online spares of the array that holds a logical drive", _LUN, _BAYS),
    _op("delete_spare", "take drives off the spares of the array that holds a logical drive", _LUN, _BAYS),
    _op("expand_unit", "add drives to the array that holds a logical drive (it restripes in the background)",
        _LUN, _BAYS),
    _op("extend_unit", "grow a logical drive into the free space that follows it on its array", _LUN, _SIZE),
    _op("set_rebuild_priority", "how fast rebuilds and expansions run beside host I/O",
        Arg("priority", Kind.TEXT, choices=REBUILD_PRIORITIES)),
    _op("set_cache", "the array accelerator: on or off, read share, size, no-battery write cache",
        Arg("enabled", Kind.BOOL, required=False),
        Arg("ratio_read_percent", Kind.INT, choices=CACHE_RATIOS, required=False),
        Arg("size_mb", Kind.INT, CACHE_SIZE_MB, required=False),
        Arg("force_write_back", Kind.BOOL, required=False)),
    # -- host connections and Selective Storage Presentation
    _op("connections", "the host connections (name, initiator IQN, port) and each port's access mode",
        persists=False),
    _op("acl", "the units presented to some connections only, and to which", persists=False),
    _op("add_connection", f"name a host by its initiator IQN, on one port or either (at most {MAX_CONNECTIONS})",
        _CONN, Arg("iqn", Kind.TEXT, max_len=IQN_MAX), Arg("port", Kind.INT, PORTS, required=False)),
    _op("delete_connection", "forget a host connection (not while an ACL entry names it)", _CONN),
    _op("set_port_access", "who may log in on a port: anyone, or only the initiators of its connections",
        Arg("port", Kind.INT, PORTS), Arg("access", Kind.TEXT, choices=PORT_ACCESS)),
    _op("add_acl", "present a unit to a connection (once a unit has ACL entries, only they see it)",
        replace(_CONN, name="connection"), _LUN),
    _op("delete_acl", "take a connection off a unit's ACL (with none left, every host sees it)",
        replace(_CONN, name="connection"), _LUN),
    # -- Recovery Server Option
    _op("rso_status", "the Recovery Server Option: state, active and fenced port, heartbeats, links", persists=False),
    _op("rso_configure", f"enable or disable RSO, its heartbeat timeout ({RSO_TIMEOUT_S} s), whether the "
                         "controller fails over by itself",
        Arg("enabled", Kind.BOOL), Arg("timeout_s", Kind.NUMBER, RSO_TIMEOUT_S, required=False),
        Arg("act_alone", Kind.BOOL, required=False)),
    _op("rso_failover", "forced failover (the F8 key): port 1 fenced, port 2 active"),
    _op("rso_restore", "port 1 active again, port 2 listening (not while the recovery host is logged in)"),
    # -- ALUA: one target port group per port, implicit transitions only
    _op("alua_status", "the target port groups: each port's access state, port faults, transition time",
        persists=False),
    _op("set_alua", f"how long a port's access state change reports transitioning ({ALUA_TRANSITION_MS} ms, "
                    "0: at once)",
        Arg("transition_ms", Kind.NUMBER, ALUA_TRANSITION_MS)),
    _op("set_port_alua", f"a port fault's access state on a port ({', '.join(PORT_ALUA)}; active lifts it)",
        Arg("port", Kind.INT, PORTS), Arg("state", Kind.TEXT, choices=PORT_ALUA), persists=False),
    # -- fault injection
    _op("fault_disk", f"a drive fault (bays {BAYS}): fail, pull, insert, media error, latency ({LATENCY_MS} ms), "
                      "predictive failure, clear",
        Arg("bay", Kind.INT, BAYS), Arg("action", Kind.TEXT, choices=tuple(DISK_FAULTS)),
        Arg("serial", Kind.TEXT, required=False, only_for=("insert",)),
        Arg("new", Kind.BOOL, required=False, only_for=("insert",)),
        Arg("size_bytes", Kind.INT, AtLeast(MIN_DRIVE_BYTES), multiple=BLOCK_SIZE, required=False,
            only_for=("insert",)),
        Arg("lba", Kind.INT, MEDIA_ERROR_LBA, only_for=("media-error",)),
        Arg("count", Kind.INT, MEDIA_ERROR_COUNT, required=False, only_for=("media-error",)),
        Arg("ms", Kind.NUMBER, LATENCY_MS, only_for=("latency",))),
    _op("fault_psu", f"fail or restore a power supply ({PSUS})",
        Arg("n", Kind.INT, PSUS), Arg("action", Kind.TEXT, choices=COMPONENT_ACTIONS)),
    _op("fault_fan", f"fail or restore a fan ({FANS})",
        Arg("n", Kind.INT, FANS), Arg("action", Kind.TEXT, choices=COMPONENT_ACTIONS)),
    _op("set_temperature", f"set the enclosure temperature ({TEMPERATURE_C} degrees C)",
        Arg("celsius", Kind.NUMBER, TEMPERATURE_C)),
    _op("fault_battery", "the cache battery: charge low, failed, removed, or restored (a new pack that charges)",
        Arg("action", Kind.TEXT, choices=BATTERY_ACTIONS)),
    _op("fault_link", f"break or mend a port's heartbeat link (ports {PORTS})",
        Arg("port", Kind.INT, PORTS), Arg("action", Kind.TEXT, choices=LINK_ACTIONS), persists=False),
    _op("power_off", f"cut the shelf's power (hosts lose their connections), for {POWER_OFF_S} s or until "
                     "power-on",
        Arg("duration", Kind.NUMBER, POWER_OFF_S, required=False), persists=False, owner=Owner.PROCESS),
    _op("power_on", "power back on: the cache replays what the battery kept, the drives spin up",
        owner=Owner.PROCESS),
    # -- path faults and command errors (the process: portals; injections live in memory only)
    _op("fault_port", f"an iSCSI port fault (ports {PORTS}), for every host or one initiator: down, up, reset, "
                      f"black hole, delay ({PORT_DELAY_MS} ms), flap ({FLAP_S} s), clear",
        Arg("port", Kind.INT, PORTS), Arg("action", Kind.TEXT, choices=PORT_FAULTS),
        Arg("initiator", Kind.TEXT, max_len=IQN_MAX, required=False),
        Arg("ms", Kind.NUMBER, PORT_DELAY_MS, only_for=("delay",)),
        Arg("seconds", Kind.NUMBER, FLAP_S, only_for=("flap",)), persists=False, owner=Owner.PROCESS),
    _op("fault_session", "drop a host's sessions and refuse its old ISIDs (reinstate), or let them back (clear)",
        Arg("initiator", Kind.TEXT, max_len=IQN_MAX), Arg("action", Kind.TEXT, choices=SESSION_FAULTS),
        persists=False, owner=Owner.PROCESS),
    _op("path_faults", "the port and session faults in force", persists=False, owner=Owner.PROCESS),
    _op("inject", f"answer some commands of a unit with an error, status, no answer or a delay "
                  f"({INJECT_DELAY_MS} ms); once, {INJECT_COUNT} times or always",
        _LUN, Arg("op", Kind.TEXT, max_len=8), Arg("error", Kind.TEXT, choices=INJECT_ERRORS),
        Arg("lba_first", Kind.INT, INJECT_LBA, required=False), Arg("lba_last", Kind.INT, INJECT_LBA, required=False),
        Arg("count", Kind.INT, INJECT_COUNT, required=False), Arg("always", Kind.BOOL, required=False),
        Arg("initiator", Kind.TEXT, max_len=IQN_MAX, required=False), Arg("port", Kind.INT, PORTS, required=False),
        Arg("sense", Kind.TEXT, max_len=16, required=False),
        Arg("delay_ms", Kind.NUMBER, INJECT_DELAY_MS, required=False), persists=False, owner=Owner.PROCESS),
    _op("injections", "the command error injections, with how often each fired", persists=False,
        owner=Owner.PROCESS),
    _op("delete_injection", "delete one command error injection", Arg("id", Kind.INT, AtLeast(1)),
        persists=False, owner=Owner.PROCESS),
    _op("clear_injections", "delete every command error injection", persists=False, owner=Owner.PROCESS),
    # -- alert sinks (the process: SNMP traps, syslog, webhooks)
    _op("alert_status", "the alert sinks (SNMP managers, syslog receivers, webhooks) with their counts",
        persists=False, owner=Owner.PROCESS),
    _op("set_alerts", "where alerts go: SNMP managers, community, syslog receivers, webhook URLs (\"\": none)",
        Arg("snmp", Kind.TEXT, required=False, max_len=ALERT_TARGETS_MAX),
        Arg("community", Kind.TEXT, required=False, max_len=64),
        Arg("syslog", Kind.TEXT, required=False, max_len=ALERT_TARGETS_MAX),
        Arg("webhook", Kind.TEXT, required=False, max_len=ALERT_TARGETS_MAX), persists=False, owner=Owner.PROCESS),
    # -- snapshots of the whole shelf (the process: it closes and reopens the controller)
    _op("snapshot_save", "copy the whole shelf (drive images, NVRAM, cache, reservations, events) under a name",
        Arg("name", Kind.TEXT, max_len=SNAPSHOT_NAME_MAX), persists=False, owner=Owner.PROCESS),
    _op("snapshot_restore", "put the shelf back to a snapshot (sessions stay and see a reset)",
        Arg("name", Kind.TEXT, max_len=SNAPSHOT_NAME_MAX), owner=Owner.PROCESS),
    _op("snapshots", "the snapshots: name, when taken, size", persists=False, owner=Owner.PROCESS),
    _op("snapshot_delete", "delete a snapshot", Arg("name", Kind.TEXT, max_len=SNAPSHOT_NAME_MAX), persists=False,
        owner=Owner.PROCESS),
    _op("reset", "put the shelf back to its state right after start (and end path faults and injections)",
        owner=Owner.PROCESS),
    # -- record and replay (the process: msa500_emu/recording, docs/recording.md)
    _op("record_start", "record every SCSI command, operation and event into a file (JSON lines); data-out kept "
                        "in full up to data_cap bytes",
        Arg("file", Kind.TEXT, max_len=RECORD_FILE_MAX), Arg("data_cap", Kind.INT, AtLeast(0), required=False),
        persists=False, owner=Owner.PROCESS),
    _op("record_stop", "stop the recording and close its file", persists=False, owner=Owner.PROCESS),
    _op("record_status", "the recording: its file, records, commands, bytes, data-out kept", persists=False,
        owner=Owner.PROCESS),
)}
#: The rows that only read: a recording leaves them out (nothing to replay).
VIEWS = frozenset({"describe", "disks", "units", "spares", "events", "connections", "acl", "rso_status",
                   "alua_status", "path_faults", "injections", "alert_status", "snapshots", "record_status"})


def get(name: str) -> Operation:
    """The row of `name`; OperationError naming it when there is none."""
    op = OPERATIONS.get(name) if isinstance(name, str) else None
    if op is None:
        raise OperationError(f"unknown operation {name!r} (known: {', '.join(OPERATIONS)})")
    return op


def bind(name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
         ) -> tuple[Operation, dict[str, Any]]:
    """The row of `name` and the checked keyword arguments of this call."""
    op = get(name)
    return op, op.bind(args, kwargs)
