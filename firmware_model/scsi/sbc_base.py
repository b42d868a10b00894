"""What every block command of a logical drive shares: its state, limits and checks.

The command groups (sbc_rw, sbc_provisioning, sbc_info) build on `BlockBase`; sbc.py
puts them together as `BlockUnit`.
"""

from __future__ import annotations

from collections.abc import Collection, Generator

from firmware_model.scsi.catalog import THIN, Block10, Block12, Block16
from firmware_model.scsi.commands import CommandSet, Entry
from firmware_model.scsi.errors import (
    ScsiError,
    invalid_field_in_cdb,
    lba_out_of_range,
    short_data_out,
    write_protected,
)
from firmware_model.scsi.mode import caching_page, control_page, informational_exceptions_page
from firmware_model.scsi.reservations import Reservations
from firmware_model.scsi.sense import build_sense
from firmware_model.scsi.stepped import Wait
from firmware_model.scsi.types import BlockVolume, Nexus, ScsiRequest, ScsiResult, Status
from firmware_model.scsi.units import LogicalUnit, ReservationsLike

# The limits the Block Limits VPD page reports and the commands enforce.
CACHE_BYTES = 128 * 1024 * 1024  # the MSA500's battery-backed array accelerator
MAX_TRANSFER_BLOCKS = 0x10000
OPTIMAL_TRANSFER_BLOCKS = 256
OPTIMAL_GRANULARITY = 8
MAX_COMPARE_AND_WRITE = 255
MAX_UNMAP_LBA_COUNT = 0x100000
MAX_UNMAP_DESCRIPTORS = 256
OPTIMAL_UNMAP_GRANULARITY = 8
MAX_WRITE_SAME_BLOCKS = 0x10000
MAX_ATOMIC_BLOCKS = 0x10000

_B10 = Block10.unpacker(Block10.lba, Block10.length)
_B12 = Block12.unpacker(Block12.lba, Block12.length)
_B16 = Block16.unpacker(Block16.lba, Block16.length)


class BlockBase(LogicalUnit):
    """A logical drive (peripheral type 0x00) backed by `volume`: state and shared checks."""

    wants_reservations = True
    command_sets = frozenset((CommandSet.SPC, CommandSet.SBC))

    def __init__(
        self,
        volume: BlockVolume,
        name: str,
        serial: str,
        *,
        product: str = "MSA500 VOLUME",
        wwn: int | None = None,
        reservations: ReservationsLike | None = None,
        cache_bytes: int = CACHE_BYTES,
        read_only: bool = False,
    ) -> None:
        self.volume = volume
        self.name = name
        self.block_size = volume.block_size
        self.thin = callable(getattr(volume, "unmap", None)) and callable(
            getattr(volume, "mapping", None)
        )
        self.cache_bytes = cache_bytes
        self.read_only = read_only
        self._prevent: set[Nexus] = set()
        # A range flush when the volume has one (the controller's cache): FUA and SYNCHRONIZE
        # CACHE then write out only what they must.
        self._flush_range = getattr(volume, "flush_range", None)
        # An error of an earlier, already acknowledged command (data lost from the write-back
        # cache): reported once to each I_T nexus as a deferred error (SPC-4 4.5.5).
        self.deferred_error: ScsiError | None = None
        self._deferred_told: set[Nexus] = set()
        super().__init__(serial, product, wwn)
        self.reservations = reservations if reservations is not None else Reservations({})

    @property
    def features(self) -> Collection[str]:
        return (THIN,) if self.thin else ()

    def mode_page_defaults(self) -> list[tuple[bytes, bytes]]:
        return [caching_page(), control_page(), informational_exceptions_page()]

    def dispatch(self, req: ScsiRequest, entry: Entry | None) -> ScsiResult:
        if (
            self.deferred_error is not None
            and req.nexus not in self._deferred_told
            and (entry is None or not entry.ua_exempt)
        ):
            self._deferred_told.add(req.nexus)
            sense = build_sense(self.deferred_error, self.d_sense, deferred=True)
            return ScsiResult(Status.CHECK_CONDITION, b"", sense)
        return super().dispatch(req, entry)

    def set_deferred_error(self, err: ScsiError | None) -> None:
        """Report `err` once to every I_T nexus (None: stop reporting)."""
        self.deferred_error = err
        self._deferred_told.clear()

    @property
    def max_data_out(self) -> int:
        """The Block Limits page's MAXIMUM TRANSFER LENGTH in bytes (COMPARE AND WRITE's 2 x 255 fit)."""
        return max(MAX_TRANSFER_BLOCKS, 2 * MAX_COMPARE_AND_WRITE) * self.block_size

    # --------------------------------------------------------------- events
    def nexus_loss(self, nexus: Nexus) -> None:
        self._prevent.discard(nexus)
        super().nexus_loss(nexus)
        self._drain_unit_attentions()

    def reset(self) -> None:
        self._prevent.clear()
        super().reset()
        self._drain_unit_attentions()

    def _drain_unit_attentions(self) -> None:
        """Move UAs the reservations object raised (preempted, released...) to the target."""
        drain = getattr(self.reservations, "pending_unit_attentions", None)
        if drain is None:
            return
        for nexus, asc, ascq in drain():
            if self.target is not None:
                self.target.establish_unit_attention(self.lun, (asc << 8) | ascq, nexus=nexus)

    # --------------------------------------------------------------- checks
    def _flush(self, lba: int, count: int | None) -> None:
        """The blocks [lba, lba+count) (count None: to the end) on the medium."""
        if self._flush_range is not None:
            self._flush_range(lba, count)
        else:
            self.volume.flush()

    def _flush_steps(self, lba: int, count: int | None) -> Generator[Wait, None, None]:
        """`_flush` in steps (stepped.py) where the volume can (the cache: destage, then the drives'
        fdatasync off the event loop); at once where it cannot."""
        steps = getattr(self.volume, "flush_steps", None)
        if steps is None:
            self._flush(lba, count)
            return
        yield from steps(lba, count)

    def _range(self, lba: int, count: int) -> None:
        if lba + count > self.volume.num_blocks:
            raise lba_out_of_range(lba)

    def _check_len(self, count: int, field_byte: int) -> None:
        if count > MAX_TRANSFER_BLOCKS:
            raise invalid_field_in_cdb(field_byte)

    def _writable(self) -> None:
        if self.mode.swp or self.read_only:
            raise write_protected()

    def _data(
        self, req: ScsiRequest, length: int, offset: int = 0, *, partial: bool = False
    ) -> bytes | bytearray | memoryview:
        """`length` bytes of data-out from `offset`.

        Records the length the CDB asks for (SPDTL) so the transport reports residuals
        against it. When the initiator sent less (iSCSI EDTL < SPDTL), `partial` callers get
        what arrived and write only that (SAM-5 5.4.3: the transfer is truncated to EDTL);
        the others refuse with INVALID FIELD IN COMMAND INFORMATION UNIT and write nothing.
        """
        data = req.data_out
        want = offset + length
        req.spdtl = max(req.spdtl or 0, want)
        if len(data) < want:
            if not partial:
                raise short_data_out()
            return memoryview(data)[offset:]
        if offset == 0 and len(data) == length:
            return data
        return memoryview(data)[offset:want]

    @staticmethod
    def _lba_len(cdb: bytes) -> tuple[int, int, int]:
        """(LBA, length, length byte offset) of a 10/12/16-byte block command."""
        group = cdb[0] >> 5
        if group == 1:  # 10-byte group
            lba, count = _B10(cdb)
            return lba, count, Block10.length.byte
        if group == 5:  # 12-byte group
            lba, count = _B12(cdb)
            return lba, count, Block12.length.byte
        if len(cdb) >= Block16.size:
            lba, count = _B16(cdb)
            return lba, count, Block16.length.byte
        raise invalid_field_in_cdb(0)
