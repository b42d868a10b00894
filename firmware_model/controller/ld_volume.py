"""What a logical drive's BlockUnit reads and writes: its RaidVolume(s), with RAID errors
turned into sense data.

The volume knows nothing of the controller: what a failing or half-done I/O means for the
shelf (a member to fail, blocks recorded as lost, rows to make consistent, the write-intent
record) it hands to an `IoFaults`, which the controller's volumes subsystem implements.
"""

from __future__ import annotations

from typing import Protocol

from ..raid.api import DriveError, UnrecoverableRead, VolumeFailed
from ..scsi.errors import ScsiError
from .errors import unit_failed_sense, unit_offline_sense, unrecovered_read
from .records import LogicalDrive, UnitState
from .spec import BLOCK_SIZE

_RAID_ERRORS = (UnrecoverableRead, VolumeFailed, DriveError)


class IoFaults(Protocol):
    """What a logical drive's I/O tells the controller."""

    def write_begins(self, lun: int, lba: int, count: int) -> int:
        """A host write is about to touch members: its write-intent record (a slot)."""
        ...

    def write_left(self) -> None:
        """The write under way stopped touching members (done, failed or raised)."""
        ...

    def write_failed(self, ld: LogicalDrive, lba: int, count: int, slot: int) -> None:
        """The RAID engine gave up in the middle of a write: make its rows consistent."""
        ...

    def write_done(self, ld: LogicalDrive, lba: int, count: int, slot: int) -> None:
        """The write reached every member it had to: end its record, note what it healed."""
        ...

    def lost_found(self, during: str) -> None:
        """Blocks the RAID engine just recorded as lost: report and keep them."""
        ...

    def io_failed(self, ld: LogicalDrive) -> None:
        """An I/O failed for want of members: fail what must fail."""
        ...


class LdVolume:
    """What BlockUnit sees: the logical drive's RaidVolume, with RAID errors turned into sense."""

    def __init__(self, faults: IoFaults, ld: LogicalDrive) -> None:
        self.faults = faults
        self.ld = ld
        self.block_size = BLOCK_SIZE

    @property
    def num_blocks(self) -> int:
        return self.ld.cfg.num_blocks

    @property
    def full_stripe_blocks(self) -> int:
        """The RAID volume's whole stripe in blocks (0: not a parity level, or two layouts while expanding)."""
        ld = self.ld
        return 0 if ld.new_volume is not None else ld.volume.full_stripe_blocks

    def read(self, lba: int, count: int) -> bytes:
        ld = self.ld
        if ld.state is UnitState.FAILED:
            raise unit_offline_sense()
        if ld.lost:
            first = ld.lost.first_in(lba, count)
            if first is not None:
                raise unrecovered_read(first)
        try:
            if ld.new_volume is not None and lba < ld.moved_blocks:
                split = min(lba + count, ld.moved_blocks)
                head = ld.new_volume.read(lba, split - lba)
                if split == lba + count:
                    return head
                return head + ld.volume.read(split, lba + count - split)
            return ld.volume.read(lba, count)
        except _RAID_ERRORS as exc:
            raise self._sense_for(exc) from None

    def _sense_for(self, exc: Exception) -> ScsiError:
        """The answer a host gets when the RAID engine gives up, after the controller notes it."""
        if isinstance(exc, UnrecoverableRead):
            self.faults.lost_found("a degraded read")
            return unrecovered_read(exc.lba)
        self.faults.io_failed(self.ld)
        return unit_failed_sense()

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        ld = self.ld
        if ld.state is UnitState.FAILED:
            raise unit_offline_sense()
        faults = self.faults
        count = len(data) // BLOCK_SIZE
        slot = faults.write_begins(ld.cfg.lun, lba, count)  # before any member is touched
        try:
            if ld.new_volume is not None and lba < ld.moved_blocks:
                split = min(lba + count, ld.moved_blocks)
                mv = memoryview(data)
                ld.new_volume.write(lba, mv[: (split - lba) * BLOCK_SIZE])
                if split < lba + count:
                    ld.volume.write(split, mv[(split - lba) * BLOCK_SIZE :])
            else:
                ld.volume.write(lba, data)
        except _RAID_ERRORS as exc:
            faults.write_failed(ld, lba, count, slot)  # what the write left half done
            raise self._sense_for(exc) from None
        finally:
            faults.write_left()
        # any other failure (the drive images' file system full...) keeps its record: the rows it
        # may have left half written are made consistent at the next start
        faults.write_done(ld, lba, count, slot)

    def flush(self) -> None:
        self.ld.volume.flush()
        if self.ld.new_volume is not None:
            self.ld.new_volume.flush()

    def sync_fds(self) -> list[int]:
        """flush() as duplicated fds (drive_io.sync_all): both layouts during an expansion."""
        fds = self.ld.volume.sync_fds()
        if self.ld.new_volume is not None:
            fds += self.ld.new_volume.sync_fds()
        return fds
