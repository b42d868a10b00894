"""What a row of the command table declares, and the per-unit table the dispatcher runs.

catalog.py holds the rows, one per SCSI command (as tgt's ops table does): handler, CDB
layout, reservation class, unit-attention exemption, the ALUA states that allow it.
Each unit binds the rows it implements into `opcode -> Entry` (or `opcode -> service
action -> Entry`), so the target and the unit look a command up once and read every fact
from the entry. The CDB usage mask is the single truth of which CDB bits a command uses:
any other bit set is rejected with INVALID FIELD IN CDB pointing at it, and the same mask
is what REPORT SUPPORTED OPERATION CODES returns, so the report cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from firmware_model.scsi.cdb import Cdb, Field
from firmware_model.scsi.constants import AluaState
from firmware_model.scsi.errors import invalid_field_in_cdb
from firmware_model.scsi.types import ScsiRequest, ScsiResult

Handler = Callable[[ScsiRequest], ScsiResult]


class Access(IntEnum):
    """A command's reservation class: how it fares while another I_T nexus holds a reservation
    (SPC-4 5.13.1 table 63, SBC-3 4.17; SPC-2 5.5.1). reservations.py applies it."""

    EXEMPT = 0  # allowed under every persistent reservation and under an SPC-2 reservation
    PR_EXEMPT = 1  # allowed under every persistent reservation; an SPC-2 reservation blocks it
    READ = 2  # allowed through Write Exclusive types; Exclusive Access types and SPC-2 block it
    WRITE = 3  # blocked unless the I_T nexus is registered under an RO/AR type; SPC-2 blocks it
    RESERVE_RELEASE = 4  # RESERVE/RELEASE(6/10): their own rules (SPC-2 7.21, SPC-4 5.13.3)


# A reservation class that depends on CDB bits (PREVENT ALLOW, START STOP UNIT).
AccessRule = Callable[[bytes], Access]


class CommandSet(Enum):
    """Which units run a row's command."""

    SPC = "spc"  # every logical unit: LUN 0 and the logical drives
    SBC = "sbc"  # logical drives (direct access block devices)
    NONE = "none"  # named by the standards for its reservation class; no unit runs it


ACTIVE = frozenset((AluaState.ACTIVE_OPTIMIZED, AluaState.ACTIVE_NON_OPTIMIZED))
EVERY_STATE = frozenset(AluaState)


@dataclass(frozen=True)
class Command:
    """One SCSI command: every fact the firmware keeps about it.

    `sa` makes the row one service action of a shared opcode (MAINTENANCE IN: REPORT TARGET
    PORT GROUPS), with its own reservation class; `service_actions` makes it one command
    taking several (PERSISTENT RESERVE IN), whose class covers the whole opcode.
    `handler` names the unit method that runs it. `ua_exempt` commands neither report
    nor clear a unit attention or deferred error (SAM-5 5.14; REQUEST SENSE reports them
    itself); `any_lun` ones are answered even on a LUN with nothing behind it; `alua`
    lists the asymmetric access states in which a logical drive runs it (SPC-4 5.15.2.4);
    `media` ones need the medium ready; `feature` rows exist only on units with it.
    """

    name: str
    opcode: int
    cdb: type[Cdb]
    handler: str | None
    access: Access | AccessRule
    on: CommandSet
    sa: int | None = None
    service_actions: tuple[int, ...] = ()
    media: bool = False
    timeout: int = 30
    ua_exempt: bool = False
    any_lun: bool = False
    alua: frozenset[int] = ACTIVE
    feature: str | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) != (self.on is CommandSet.NONE):
            raise ValueError(f"{self.name}: a row has a handler exactly when a unit runs it")
        if self.sa is not None and self.service_actions:
            raise ValueError(f"{self.name}: give sa or service_actions, not both")

    def keys(self) -> list[int | None]:
        """The service actions the row fills in a unit table (None: the opcode has none)."""
        if self.sa is not None:
            return [self.sa]
        return list(self.service_actions) or [None]


@dataclass(frozen=True)
class CommandSpec:
    """One supported command (opcode, or opcode + service action) as a unit runs it."""

    usage: bytes  # CDB usage data: usage[0] is the opcode, 1 bits mark bits the command uses
    sa: int | None = None  # service action in CDB byte 1 bits 4-0
    media: bool = False  # needs the medium ready (a stopped unit answers NOT READY)
    timeout: int = 30  # nominal command timeout, seconds, for the RCTD descriptor
    reject: int = field(init=False)  # the CDB bits not in usage, as one big-endian int

    def __post_init__(self) -> None:
        full = int.from_bytes(b"\xff" * len(self.usage), "big")
        object.__setattr__(self, "reject", full & ~int.from_bytes(self.usage, "big"))

    @property
    def opcode(self) -> int:
        return self.usage[0]

    @property
    def length(self) -> int:
        return len(self.usage)

    def check(self, cdb: bytes) -> None:
        """Reject a short CDB or any bit outside the usage mask, pointing at the first one."""
        n = len(self.usage)
        if len(cdb) < n:
            raise invalid_field_in_cdb()
        if int.from_bytes(cdb[:n], "big") & self.reject:
            for i in range(1, n):
                bad = cdb[i] & ~self.usage[i] & 0xFF
                if bad:
                    raise invalid_field_in_cdb(i, bad.bit_length() - 1)


def usage(*mask: int) -> bytes:
    return bytes(mask)


class Entry:
    """A row bound to the unit method that runs it, with the facts dispatch reads per command."""

    __slots__ = ("access", "alua", "handler", "row", "spec", "ua_exempt")

    def __init__(self, spec: CommandSpec, handler: Handler, row: Command) -> None:
        self.spec = spec
        self.handler = handler
        self.row = row
        self.access = row.access
        self.ua_exempt = row.ua_exempt
        self.alua = row.alua


def bind(row: Command, handler: Handler, features: Collection[str], has_medium: bool) -> list[Entry]:
    """The entries `row` puts in a unit table, one per service action."""
    cdb_usage = row.cdb.usage(row.opcode, features)
    media = row.media and has_medium
    return [Entry(CommandSpec(cdb_usage, sa=sa, media=media, timeout=row.timeout), handler, row) for sa in row.keys()]


def vendor_row(opcode: int, cdb_usage: bytes, sa: int | None, media: bool, timeout: int, access: Access) -> Command:
    """A row for a command registered at run time (vendor opcodes 0xC0-0xFF) from its usage mask."""
    attrs: dict[str, object] = {f"byte{i}": Field(i, b) for i, b in enumerate(cdb_usage) if i and b}
    layout = type(f"Vendor{opcode:02X}", (Cdb,), attrs, size=len(cdb_usage))
    return Command(
        f"VENDOR {opcode:#04x}", opcode, layout, "vendor", access, CommandSet.SPC, sa=sa, media=media, timeout=timeout
    )
