"""Command descriptors: one table drives dispatch, CDB checking and REPORT SUPPORTED OPCODES.

The CDB usage mask is the single truth of which CDB bits a command uses: any other bit
set is rejected with INVALID FIELD IN CDB pointing at it, and the same mask is what
REPORT SUPPORTED OPERATION CODES returns, so the report cannot disagree with the checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_model.scsi.errors import ScsiError, invalid_field_in_cdb
from firmware_model.scsi.types import ScsiRequest, ScsiResult

Handler = Callable[[ScsiRequest], ScsiResult]


@dataclass(frozen=True)
class CommandSpec:
    """One supported command (opcode, or opcode + service action)."""

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
            raise ScsiError(0x5, 0x24, 0x00)
        if int.from_bytes(cdb[:n], "big") & self.reject:
            for i in range(1, n):
                bad = cdb[i] & ~self.usage[i] & 0xFF
                if bad:
                    raise invalid_field_in_cdb(i, bad.bit_length() - 1)


def usage(*mask: int) -> bytes:
    return bytes(mask)


@dataclass
class Entry:
    """A spec bound to the handler that runs it."""

    spec: CommandSpec
    handler: Handler
