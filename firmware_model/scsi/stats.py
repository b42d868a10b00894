"""Command counters the target keeps per LUN and per port, for the management layer's /metrics.

Plain ints and lists, touched once per command on the data path and read only when someone
scrapes: no metrics library here (firmware_model stays pure), and the cost per command is a
few dict and list operations. Latency is observed by the transport, which alone sees a command
from its first PDU to its response (the host's view); the buckets are one fixed tuple.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from firmware_model.scsi.catalog import COMMANDS, row_for
from firmware_model.scsi.types import ScsiRequest, ScsiResult

#: Upper bounds (seconds) of the command latency histogram's buckets; +Inf follows the last.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BOUNDS_NS: tuple[int, ...] = tuple(round(b * 1e9) for b in LATENCY_BUCKETS_S)

VENDOR = "VENDOR"  # opcodes C0h-FFh (the RSO commands on LUN 0): one label for the vendor range
UNKNOWN = "UNKNOWN"  # an opcode no row of the catalog names
_VENDOR_FIRST = 0xC0
_WITH_SERVICE_ACTION = frozenset(row.opcode for row in COMMANDS if row.sa is not None)


def _names() -> tuple[str | None, ...]:
    """The op label of each opcode; None where the service action picks the row (row_for per command)."""
    out: list[str | None] = []
    for op in range(256):
        if op in _WITH_SERVICE_ACTION:
            out.append(None)
            continue
        row = row_for(bytes([op]) + bytes(15))
        out.append(row.name if row is not None else VENDOR if op >= _VENDOR_FIRST else UNKNOWN)
    return tuple(out)


_NAMES = _names()


def op_name(cdb: bytes | bytearray | memoryview) -> str:
    """The `op` label of a command: its catalog row's name ("READ(16)"), VENDOR or UNKNOWN.

    Bounded by the catalog: a host sending every opcode cannot grow the label set.
    """
    if not cdb:
        return UNKNOWN
    name = _NAMES[cdb[0]]
    if name is None:
        row = row_for(bytes(cdb))
        name = row.name if row is not None else UNKNOWN
    return name


class LunStats:
    """One LUN's counters since it was added (a new LUN of the same number starts from zero)."""

    __slots__ = ("commands", "latency_counts", "latency_sum_ns", "read_bytes", "write_bytes")

    def __init__(self) -> None:
        self.read_bytes = 0  # data-in of commands that completed GOOD
        self.write_bytes = 0  # data-out of commands that completed GOOD
        self.commands: defaultdict[str, int] = defaultdict(int)  # op label -> commands, whatever their status
        self.latency_counts = [0] * (len(_BOUNDS_NS) + 1)  # per bucket (not cumulative); last is +Inf
        self.latency_sum_ns = 0

    def observe(self, ns: int) -> None:
        """One command's latency, in nanoseconds."""
        self.latency_counts[bisect_left(_BOUNDS_NS, ns)] += 1
        self.latency_sum_ns += ns

    def cumulative(self) -> list[int]:
        """Observations at or below each bound of LATENCY_BUCKETS_S, then the total (+Inf)."""
        out, total = [], 0
        for n in self.latency_counts:
            total += n
            out.append(total)
        return out


class TargetStats:
    """The counters of one ScsiTarget: a LunStats per LUN in its map, commands per port."""

    def __init__(self) -> None:
        self.luns: dict[int, LunStats] = {}
        self.port_commands: defaultdict[int, int] = defaultdict(int)

    def add_lun(self, lun: int) -> None:
        self.luns[lun] = LunStats()

    def remove_lun(self, lun: int) -> None:
        self.luns.pop(lun, None)

    def record(self, req: ScsiRequest, result: ScsiResult) -> None:
        """One executed command: its port, its LUN's op count and, when GOOD, its bytes."""
        self.port_commands[req.nexus.port] += 1
        s = self.luns.get(req.lun)
        if s is None:  # a LUN with nothing behind it: counted on its port only (bounded labels)
            return
        cdb = req.cdb
        name = _NAMES[cdb[0]] if cdb else UNKNOWN
        if name is None:
            name = op_name(cdb)
        s.commands[name] += 1
        if not result.status:  # GOOD
            data = result.data
            if data:
                s.read_bytes += len(data)
            data = req.data_out
            if data:
                s.write_bytes += len(data)

    def observe(self, lun: int, ns: int) -> None:
        """A command's latency as the host saw it (the transport calls this at its response)."""
        s = self.luns.get(lun)
        if s is not None:  # LunStats.observe inlined: one call less per command
            s.latency_counts[bisect_left(_BOUNDS_NS, ns)] += 1
            s.latency_sum_ns += ns
