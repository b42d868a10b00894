"""What crosses the transport/firmware boundary: nexus in, status/data/sense out."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


class Status(IntEnum):
    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class DataDirection(IntEnum):
    NONE = 0
    READ = 1  # data-in: target to initiator
    WRITE = 2  # data-out: initiator to target


@dataclass(frozen=True)
class Nexus:
    """An I_T nexus: the initiator port seen through one controller port.

    `initiator` is the iSCSI initiator port name ("iqn...,i,0x<ISID>"), `port` the
    controller port (1 or 2), which is also the SCSI relative target port identifier.
    """

    initiator: str
    port: int


@dataclass
class ScsiResult:
    status: Status = Status.GOOD
    data: bytes | bytearray | memoryview = b""
    sense: bytes = b""


@dataclass
class ScsiRequest:
    """One SCSI command as the transport hands it to the firmware.

    `data_out` holds all the data the initiator sent (the transport gathers it from
    immediate data, unsolicited Data-Out and R2T-solicited Data-Out before calling).
    `expected_length` is the transport's expected data transfer length for the command.
    """

    nexus: Nexus
    lun: int
    cdb: bytes
    data_out: bytes | bytearray | memoryview = b""
    expected_length: int = 0
    direction: DataDirection = DataDirection.NONE
    task_attr: int = 0  # 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA
    # Set by the firmware when it consumes data-out: the length the CDB asks for (SPC's
    # SPDTL), so the transport can report residuals against what the command wanted.
    spdtl: int | None = None
    # Set by a transport that can run a long command in steps (scsi/stepped.py).
    may_step: bool = False


class BlockVolume(Protocol):
    """Storage behind a logical drive, in logical blocks (RAID plugs in here)."""

    block_size: int

    @property
    def num_blocks(self) -> int: ...

    def read(self, lba: int, count: int) -> bytes: ...

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None: ...

    def flush(self) -> None: ...
