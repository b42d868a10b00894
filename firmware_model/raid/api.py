"""The contract between the RAID engine and the controller that owns drives and arrays.

The RAID engine (firmware_model/raid/) turns a list of members into one BlockVolume; the
controller (firmware_model/controller/) owns the drives, decides which member is failed or
rebuilding, and drives rebuilds through `RaidVolume.rebuild_region`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class RaidLevel(StrEnum):
    """The RAID levels, and the one vocabulary for naming them.

    The value ("0", "1", "10", "5", "ADG") is what NVRAM and the drives' metadata store; `parse`
    reads every name an operator may write (`names()`: 0, 1, 1+0, 10, 5, ADG, 6; any case);
    `label` is how the product writes a level ("1+0", "ADG", "5") and `display` with its RAID
    prefix ("RAID 1+0").
    """

    RAID0 = "0"
    RAID1 = "1"  # exactly two members
    RAID10 = "10"  # an even number of members >= 4 (mirrored pairs, striped)
    RAID5 = "5"  # >= 3 members, rotating parity (left-symmetric, as Smart Array)
    ADG = "ADG"  # RAID 6: >= 4 members, P (XOR) and Q (GF(2^8) Reed-Solomon) rotating

    @classmethod
    def parse(cls, name: str | int | RaidLevel) -> RaidLevel:
        """A level from any of its names; ValueError (one line, naming the choices) otherwise."""
        if isinstance(name, RaidLevel):
            return name
        level = _RAID_NAMES.get(str(name).strip().upper()) if not isinstance(name, bool) else None
        if level is None:
            raise ValueError(f"RAID level {name!r} unknown ({', '.join(x.label for x in cls)})")
        return level

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every name `parse` accepts, upper-case, in the order the command language lists them."""
        return tuple(_RAID_NAMES)

    @property
    def label(self) -> str:
        return "1+0" if self is RaidLevel.RAID10 else self.value

    @property
    def display(self) -> str:
        return f"RAID {self.label}"


#: name (upper-case) -> level; the order is the command language's RAID_LEVEL=0|1|1+0|10|5|ADG|6
_RAID_NAMES: dict[str, RaidLevel] = {
    "0": RaidLevel.RAID0,
    "1": RaidLevel.RAID1,
    "1+0": RaidLevel.RAID10,
    "10": RaidLevel.RAID10,
    "5": RaidLevel.RAID5,
    "ADG": RaidLevel.ADG,
    "6": RaidLevel.ADG,
}


class MemberState(StrEnum):
    OK = "ok"
    FAILED = "failed"  # failed or missing: never read, never written
    REBUILDING = "rebuilding"  # written by every host write; read only below `rebuilt_to`


class DriveError(Exception):
    """A member could not complete an I/O (injected media error, pulled drive)."""

    def __init__(self, offset: int, length: int, why: str = "media error") -> None:
        super().__init__(f"{why} at byte {offset}+{length}")
        self.offset = offset
        self.length = length
        self.why = why


class VolumeFailed(Exception):
    """Too many members are gone: the data cannot be read or written."""


class UnrecoverableRead(Exception):
    """A read hit errors that redundancy could not cover; `lba` is the first bad block."""

    def __init__(self, lba: int) -> None:
        super().__init__(f"unrecoverable read at LBA {lba}")
        self.lba = lba


class RowLost(Exception):
    """Inside the RAID engine: reconstruction of a stripe row failed because of read errors."""


class Member(Protocol):
    """One slot of an array as the RAID engine sees it (byte offsets into the member's
    data area, which the controller places after the drive's reserved metadata)."""

    @property
    def state(self) -> MemberState: ...

    @property
    def rebuilt_to(self) -> int:
        """For a REBUILDING member: bytes from the start of its area already reconstructed."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Raises DriveError on an injected media error or a vanished drive."""
        ...

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def flush(self) -> None: ...
