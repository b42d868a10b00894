"""Logical drives: the SBC-3 block command set over a BlockVolume.

READ/WRITE 10/16 are the hot path: one struct unpack, one range check, one volume
call, and the volume's bytes handed back as they are.
"""

from __future__ import annotations

import struct
from typing import Any

from firmware_model.scsi.commands import CommandSpec, Handler, usage
from firmware_model.scsi.constants import (
    Asc,
    Opcode,
    SenseKey,
    ServiceActionIn16,
    VersionDescriptor,
    VpdPage,
)
from firmware_model.scsi.errors import (
    ScsiError,
    illegal,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
    invalid_opcode,
    lba_out_of_range,
    miscompare,
    parameter_list_length_error,
)
from firmware_model.scsi.mode import caching_page, control_page, informational_exceptions_page
from firmware_model.scsi.reservations import ReservationConflict, Reservations
from firmware_model.scsi.sense import build_sense
from firmware_model.scsi.types import BlockVolume, Nexus, ScsiRequest, ScsiResult, Status
from firmware_model.scsi.units import LogicalUnit, ReservationsLike

GOOD = Status.GOOD
_OK = ScsiResult  # alias kept short on the hot path

_be16 = struct.Struct(">H").unpack_from
_be32 = struct.Struct(">I").unpack_from
_be64 = struct.Struct(">Q").unpack_from
_r6 = struct.Struct(">I").unpack_from  # bytes 0-3: opcode + 21-bit LBA
_r10 = struct.Struct(">IxH").unpack_from  # at 2: LBA, group, transfer length
_r12 = struct.Struct(">II").unpack_from  # at 2
_r16 = struct.Struct(">QI").unpack_from  # at 2

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
ROTATION_RATE_RPM = 15000
_CHUNK = 1 << 20
# Commands that neither report nor clear a pending deferred error (as for unit attentions).
_DEFERRED_EXEMPT = frozenset((Opcode.INQUIRY, Opcode.REPORT_LUNS, Opcode.REQUEST_SENSE))


def write_protected() -> ScsiError:
    """DATA PROTECT 27/02: SWP in the control page (or a read-only drive)."""
    return ScsiError(0x7, 0x27, 0x02)


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where a and b differ (they must differ)."""
    step = 4096
    for base in range(0, min(len(a), len(b)), step):
        if a[base : base + step] != b[base : base + step]:
            for i in range(base, min(base + step, len(a), len(b))):
                if a[i] != b[i]:
                    return i
    return min(len(a), len(b))


class BlockUnit(LogicalUnit):
    """A logical drive (peripheral type 0x00) backed by `volume`."""

    wants_reservations = True
    versions = [
        VersionDescriptor.SAM_5,
        VersionDescriptor.ISCSI,
        VersionDescriptor.SPC_4,
        VersionDescriptor.SBC_3,
    ]

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

    # ----------------------------------------------------------------- table
    def command_specs(self) -> list[tuple[CommandSpec, Handler]]:
        rw = 0x1A  # DPO, FUA, FUA_NV; RD/WRPROTECT left out: no protection information
        ws_flags = 0x08 if self.thin else 0x00  # UNMAP
        m = True
        specs: list[tuple[CommandSpec, Handler]] = [
            (CommandSpec(usage(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0), media=m), self.read6),
            (CommandSpec(usage(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0), media=m), self.write6),
            (CommandSpec(usage(0x16, 0, 0, 0, 0, 0)), self.reserve),
            (CommandSpec(usage(0x17, 0, 0, 0, 0, 0)), self.release),
            (CommandSpec(usage(0x1B, 0x01, 0, 0x0F, 0xF7, 0), timeout=60), self.start_stop_unit),
            (CommandSpec(usage(0x1E, 0, 0, 0, 0x03, 0)), self.prevent_allow),
            (CommandSpec(usage(0x25, 0, *b"\xff" * 4, 0, 0, 0x01, 0)), self.read_capacity10),
            (CommandSpec(usage(0x28, rw, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m), self.read10),
            (CommandSpec(usage(0x2A, rw, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m), self.write10),
            (
                CommandSpec(usage(0x2E, 0x12, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m),
                self.write_and_verify,
            ),
            (
                CommandSpec(usage(0x2F, 0x16, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m),
                self.verify,
            ),
            (
                CommandSpec(usage(0x34, 0x02, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m),
                self.prefetch,
            ),
            (
                CommandSpec(usage(0x35, 0x02, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m),
                self.synchronize_cache,
            ),
            (CommandSpec(usage(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0)), self.read_defect_data),
            (
                CommandSpec(usage(0x41, ws_flags, *b"\xff" * 4, 0x1F, 0xFF, 0xFF, 0), media=m),
                self.write_same,
            ),
            (CommandSpec(usage(0x56, 0x12, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0)), self.reserve),
            (CommandSpec(usage(0x57, 0x12, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0)), self.release),
            (
                CommandSpec(usage(0x88, rw, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.read16,
            ),
            (
                CommandSpec(usage(0x89, rw, *b"\xff" * 8, 0, 0, 0, 0xFF, 0x1F, 0), media=m),
                self.compare_and_write,
            ),
            (
                CommandSpec(usage(0x8A, rw, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.write16,
            ),
            (
                CommandSpec(usage(0x8B, rw, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.orwrite,
            ),
            (
                CommandSpec(usage(0x8E, 0x12, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.write_and_verify,
            ),
            (
                CommandSpec(usage(0x8F, 0x16, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.verify,
            ),
            (
                CommandSpec(usage(0x90, 0x02, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.prefetch,
            ),
            (
                CommandSpec(usage(0x91, 0x02, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m),
                self.synchronize_cache,
            ),
            (
                CommandSpec(
                    usage(0x93, ws_flags | 0x01, *b"\xff" * 8, *b"\xff" * 4, 0x1F, 0), media=m
                ),
                self.write_same,
            ),
            (
                CommandSpec(usage(0x9C, 0x18, *b"\xff" * 8, 0, 0, 0xFF, 0xFF, 0x1F, 0), media=m),
                self.write_atomic16,
            ),
            (
                CommandSpec(
                    usage(0x9E, 0x1F, *b"\xff" * 8, *b"\xff" * 4, 0x01, 0),
                    sa=ServiceActionIn16.READ_CAPACITY_16,
                ),
                self.read_capacity16,
            ),
            (
                CommandSpec(
                    usage(0x9E, 0x1F, *b"\xff" * 8, *b"\xff" * 4, 0, 0),
                    sa=ServiceActionIn16.GET_LBA_STATUS,
                    media=m,
                ),
                self.get_lba_status,
            ),
            (
                CommandSpec(usage(0xA8, rw, *b"\xff" * 4, *b"\xff" * 4, 0x1F, 0), media=m),
                self.read12,
            ),
            (
                CommandSpec(usage(0xAA, rw, *b"\xff" * 4, *b"\xff" * 4, 0x1F, 0), media=m),
                self.write12,
            ),
            (
                CommandSpec(usage(0xAE, 0x12, *b"\xff" * 4, *b"\xff" * 4, 0x1F, 0), media=m),
                self.write_and_verify,
            ),
            (
                CommandSpec(usage(0xAF, 0x16, *b"\xff" * 4, *b"\xff" * 4, 0x1F, 0), media=m),
                self.verify,
            ),
            (CommandSpec(usage(0xB7, 0x1F, 0, 0, 0, 0, *b"\xff" * 4, 0, 0)), self.read_defect_data),
        ]
        if self.thin:
            specs.append(
                (CommandSpec(usage(0x42, 0, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0), media=m), self.unmap)
            )
        for sa in range(4):
            specs.append(
                (
                    CommandSpec(usage(0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0), sa=sa),
                    self.persistent_reserve_in,
                )
            )
        for sa in range(8):
            specs.append(
                (
                    CommandSpec(usage(0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0), sa=sa),
                    self.persistent_reserve_out,
                )
            )
        return super().command_specs() + specs

    def mode_page_defaults(self) -> list[tuple[bytes, bytes]]:
        return [caching_page(), control_page(), informational_exceptions_page()]

    def execute(self, req: ScsiRequest) -> ScsiResult:
        if self.deferred_error is not None and req.nexus not in self._deferred_told:
            cdb = req.cdb
            if cdb and cdb[0] not in _DEFERRED_EXEMPT:
                self._deferred_told.add(req.nexus)
                sense = bytearray(build_sense(self.deferred_error, self.d_sense))
                sense[0] = (sense[0] & 0x80) | (0x73 if sense[0] & 0x7F == 0x72 else 0x71)
                return ScsiResult(Status.CHECK_CONDITION, b"", bytes(sense))
        return super().execute(req)

    def set_deferred_error(self, err: ScsiError | None) -> None:
        """Report `err` once to every I_T nexus (None: stop reporting)."""
        self.deferred_error = err
        self._deferred_told.clear()

    def _flush(self, lba: int, count: int | None) -> None:
        """The blocks [lba, lba+count) (count None: to the end) on the medium."""
        if self._flush_range is not None:
            self._flush_range(lba, count)
        else:
            self.volume.flush()

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

    # --------------------------------------------------------------- helpers
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
                raise ScsiError(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)
            return memoryview(data)[offset:]
        if offset == 0 and len(data) == length:
            return data
        return memoryview(data)[offset:want]

    # ------------------------------------------------------------ READ/WRITE
    def _read(self, lba: int, count: int, tl_byte: int) -> ScsiResult:
        if lba + count > self.volume.num_blocks:
            raise lba_out_of_range(lba)
        if count == 0:
            return _OK(GOOD)
        if count > MAX_TRANSFER_BLOCKS:
            raise invalid_field_in_cdb(tl_byte)
        return _OK(GOOD, self.volume.read(lba, count))

    def _write(self, req: ScsiRequest, lba: int, count: int, fua: bool, tl_byte: int) -> ScsiResult:
        volume = self.volume
        if lba + count > volume.num_blocks:
            raise lba_out_of_range(lba)
        if self.mode.swp or self.read_only:
            raise write_protected()
        if count == 0:
            return _OK(GOOD)
        if count > MAX_TRANSFER_BLOCKS:
            raise invalid_field_in_cdb(tl_byte)
        length = count * self.block_size
        data = self._data(req, length, partial=True)
        if len(data) < length:  # truncated to EDTL: keep the rest of the last block as it was
            whole, tail = divmod(len(data), self.block_size)
            if tail:
                block = bytearray(volume.read(lba + whole, 1))
                block[:tail] = data[whole * self.block_size :]
                data = bytes(data[: whole * self.block_size]) + bytes(block)
        if data:
            volume.write(lba, data)
        if fua or not self.mode.wce:
            self._flush(lba, count)
        return _OK(GOOD)

    def read10(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _r10(req.cdb, 2)
        return self._read(lba, count, 7)

    def read16(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _r16(req.cdb, 2)
        return self._read(lba, count, 10)

    def read12(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _r12(req.cdb, 2)
        return self._read(lba, count, 6)

    def read6(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        return self._read(_r6(cdb, 0)[0] & 0x1FFFFF, cdb[4] or 256, 4)

    def write10(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _r10(cdb, 2)
        return self._write(req, lba, count, bool(cdb[1] & 0x08), 7)

    def write16(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _r16(cdb, 2)
        return self._write(req, lba, count, bool(cdb[1] & 0x08), 10)

    def write12(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _r12(cdb, 2)
        return self._write(req, lba, count, bool(cdb[1] & 0x08), 6)

    def write6(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        return self._write(req, _r6(cdb, 0)[0] & 0x1FFFFF, cdb[4] or 256, False, 4)

    def write_atomic16(self, req: ScsiRequest) -> ScsiResult:
        """WRITE ATOMIC(16): every write here is applied whole before the next command runs."""
        cdb = req.cdb
        lba = _be64(cdb, 2)[0]
        count = _be16(cdb, 12)[0]
        if count > MAX_ATOMIC_BLOCKS:
            raise invalid_field_in_cdb(12)
        return self._write(req, lba, count, bool(cdb[1] & 0x08), 12)

    def _lba_len(self, cdb: bytes) -> tuple[int, int, int]:
        """(LBA, length, length byte offset) of a 10/12/16-byte block command."""
        n = len(cdb)
        op = cdb[0]
        if op >> 5 == 1:  # 10-byte group
            lba, count = _r10(cdb, 2)
            return lba, count, 7
        if op >> 5 == 5:  # 12-byte group
            lba, count = _r12(cdb, 2)
            return lba, count, 6
        if n >= 16:
            lba, count = _r16(cdb, 2)
            return lba, count, 10
        raise invalid_field_in_cdb(0)

    def write_and_verify(self, req: ScsiRequest) -> ScsiResult:
        """WRITE AND VERIFY: written through to the medium (as FUA), then read back."""
        cdb = req.cdb
        lba, count, tl_byte = self._lba_len(cdb)
        res = self._write(req, lba, count, True, tl_byte)
        if count and cdb[1] & 0x02:
            written = self._data(req, count * self.block_size, partial=True)
            back = self.volume.read(lba, count)[: len(written)]
            if back != written:
                raise miscompare(_first_difference(back, bytes(written)))
        return res

    def verify(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count, tl_byte = self._lba_len(cdb)
        bytchk = (cdb[1] >> 1) & 0x03
        if bytchk == 2:
            raise invalid_field_in_cdb(1, 2)
        self._range(lba, count)
        if count == 0:
            return _OK(GOOD)
        self._check_len(count, tl_byte)
        current = self.volume.read(lba, count)
        if bytchk == 0:
            return _OK(GOOD)
        bs = self.block_size
        if bytchk == 1:
            expected = bytes(self._data(req, count * bs))
        else:  # 11b: one block of data-out compared against every block
            expected = bytes(self._data(req, bs)) * count
        if current != expected:
            raise miscompare(_first_difference(current, expected))
        return _OK(GOOD)

    def orwrite(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _r16(cdb, 2)
        self._range(lba, count)
        self._writable()
        if count == 0:
            return _OK(GOOD)
        self._check_len(count, 10)
        length = count * self.block_size
        old = self.volume.read(lba, count)
        new = int.from_bytes(old, "big") | int.from_bytes(self._data(req, length), "big")
        self.volume.write(lba, new.to_bytes(length, "big"))
        if cdb[1] & 0x08 or not self.mode.wce:
            self._flush(lba, count)
        return _OK(GOOD)

    def compare_and_write(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba = _be64(cdb, 2)[0]
        count = cdb[13]
        if count == 0:
            # A count that wrapped (256 and up) still arrives with data; refuse it.
            if req.expected_length or len(req.data_out):
                raise invalid_field_in_cdb(13)
            self._range(lba, 0)
            return _OK(GOOD)
        if count > MAX_COMPARE_AND_WRITE:
            raise invalid_field_in_cdb(13)
        self._range(lba, count)
        self._writable()
        length = count * self.block_size
        data = bytes(self._data(req, 2 * length))
        current = self.volume.read(lba, count)
        if current != data[:length]:
            raise miscompare(_first_difference(current, data[:length]))
        self.volume.write(lba, data[length:])
        if cdb[1] & 0x08 or not self.mode.wce:
            self._flush(lba, count)
        return _OK(GOOD)

    # -------------------------------------------------------------- WRITE SAME
    def write_same(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if cdb[0] == Opcode.WRITE_SAME_10:
            lba, count = _r10(cdb, 2)
            nb_byte = 7
            ndob = False
        else:
            lba, count = _r16(cdb, 2)
            nb_byte = 10
            ndob = bool(cdb[1] & 0x01)
        unmap = bool(cdb[1] & 0x08)
        total = self.volume.num_blocks
        if lba > total:
            raise lba_out_of_range(lba)
        if count == 0:
            count = total - lba  # WSNZ=0: zero means up to the last LBA
        self._range(lba, count)
        if count > MAX_WRITE_SAME_BLOCKS:
            raise invalid_field_in_cdb(nb_byte)
        self._writable()
        bs = self.block_size
        if ndob:
            block = bytes(bs)
        else:
            block = bytes(self._data(req, bs))
        if count == 0:
            return _OK(GOOD)
        vol: Any = self.volume
        if unmap and self.thin:
            # UNMAP=1 deallocates whatever the pattern (as tgt does, and libiscsi expects);
            # the blocks then read back as zeros (LBPRZ).
            vol.unmap(lba, count)
            return _OK(GOOD)
        per = max(1, _CHUNK // bs)
        pos = lba
        end = lba + count
        chunk = block * min(per, count)
        while pos < end:
            n = min(per, end - pos)
            vol.write(pos, chunk if n * bs == len(chunk) else chunk[: n * bs])
            pos += n
        if not self.mode.wce:
            vol.flush()
        return _OK(GOOD)

    # ------------------------------------------------------------------ UNMAP
    def unmap(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        length = _be16(cdb, 7)[0]
        if length == 0:
            return _OK(GOOD)
        if length < 8:
            raise parameter_list_length_error()
        data = bytes(req.data_out[:length])
        if len(data) < 8:
            raise parameter_list_length_error()
        bddl = _be16(data, 2)[0]
        n = min(bddl, len(data) - 8) // 16
        if n > MAX_UNMAP_DESCRIPTORS:
            raise invalid_field_in_parameter_list(2)
        self._writable()
        total = self.volume.num_blocks
        extents: list[tuple[int, int]] = []
        for i in range(n):
            off = 8 + 16 * i
            lba = _be64(data, off)[0]
            count = _be32(data, off + 8)[0]
            if lba + count > total:
                raise lba_out_of_range(lba)
            if count > MAX_UNMAP_LBA_COUNT:
                raise invalid_field_in_parameter_list(off + 8)
            if count:
                extents.append((lba, count))
        vol: Any = self.volume
        for lba, count in extents:
            vol.unmap(lba, count)
        return _OK(GOOD)

    def get_lba_status(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba = _be64(cdb, 2)[0]
        alloc = _be32(cdb, 10)[0]
        total = self.volume.num_blocks
        if lba >= total:
            raise lba_out_of_range(lba)
        body = bytearray()
        vol: Any = self.volume
        pos = lba
        while pos < total and 8 + len(body) < max(alloc, 24) and len(body) < 64 * 16:
            if self.thin:
                mapped, run = vol.mapping(pos)
            else:
                mapped, run = True, total - pos
            run = max(1, min(run, total - pos, 0xFFFFFFFF))
            body += struct.pack(">QIB3x", pos, run, 0 if mapped else 1)
            pos += run
        data = struct.pack(">I4x", len(body) + 4) + bytes(body)
        return _OK(GOOD, data[:alloc])

    # --------------------------------------------------------- READ CAPACITY
    def read_capacity10(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if not cdb[8] & 0x01 and _be32(cdb, 2)[0]:
            raise invalid_field_in_cdb(2)
        last = min(self.volume.num_blocks - 1, 0xFFFFFFFF)
        return _OK(GOOD, struct.pack(">II", last, self.block_size))

    def read_capacity16(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if not cdb[14] & 0x01 and _be64(cdb, 2)[0]:
            raise invalid_field_in_cdb(2)
        alloc = _be32(cdb, 10)[0]
        lbp = 0xC0 if self.thin else 0x00  # LBPME, LBPRZ
        data = struct.pack(">QIBBBB", self.volume.num_blocks - 1, self.block_size, 0, 0, lbp, 0)
        return _OK(GOOD, (data + bytes(16))[:alloc])

    # --------------------------------------------- cache, prefetch, defects
    def synchronize_cache(self, req: ScsiRequest) -> ScsiResult:
        lba, count, _ = self._lba_len(req.cdb)
        self._range(lba, count)
        self._flush(lba, count or None)  # 0: to the last LBA
        return _OK(GOOD)

    def prefetch(self, req: ScsiRequest) -> ScsiResult:
        """CONDITION MET when the range fits in the cache, GOOD when it does not."""
        lba, count, _ = self._lba_len(req.cdb)
        self._range(lba, count)
        if count * self.block_size <= self.cache_bytes:
            return _OK(Status.CONDITION_MET)
        return _OK(GOOD)

    def read_defect_data(self, req: ScsiRequest) -> ScsiResult:
        """An array logical drive has no grown or primary defects to show: empty lists."""
        cdb = req.cdb
        if cdb[0] == Opcode.READ_DEFECT_DATA_10:
            data = bytes((0, cdb[2] & 0x1F, 0, 0))
            alloc = _be16(cdb, 7)[0]
        else:
            data = bytes((0, cdb[1] & 0x1F, 0, 0, 0, 0, 0, 0))
            alloc = _be32(cdb, 6)[0]
        return _OK(GOOD, data[:alloc])

    # ---------------------------------------------------- START STOP, PREVENT
    def start_stop_unit(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        power = cdb[4] >> 4
        if power not in (0x0, 0x1, 0x2, 0x3, 0x7, 0xA, 0xB):
            raise invalid_field_in_cdb(4, 7)
        if power:
            return _OK(GOOD)  # power conditions only: START and LOEJ are ignored
        start = cdb[4] & 0x01
        loej = cdb[4] & 0x02
        if start:
            self.ready = True
            return _OK(GOOD)
        if loej and self._prevent:
            raise illegal(Asc.MEDIUM_REMOVAL_PREVENTED)
        if not cdb[4] & 0x04:  # NO_FLUSH
            self.volume.flush()
        self.ready = False
        return _OK(GOOD)

    def prevent_allow(self, req: ScsiRequest) -> ScsiResult:
        prevent = req.cdb[4] & 0x03
        if prevent > 1:
            raise invalid_field_in_cdb(4, 1)
        if prevent:
            self._prevent.add(req.nexus)
        else:
            self._prevent.discard(req.nexus)
        return _OK(GOOD)

    # ------------------------------------------------------------ reservations
    def _res(self) -> ReservationsLike:
        if self.reservations is None:
            raise invalid_opcode()
        return self.reservations

    def _drain_unit_attentions(self) -> None:
        """Move UAs the reservations object raised (preempted, released...) to the target."""
        drain = getattr(self.reservations, "pending_unit_attentions", None)
        if drain is None:
            return
        for nexus, asc, ascq in drain():
            if self.target is not None:
                self.target.establish_unit_attention(self.lun, (asc << 8) | ascq, nexus=nexus)

    def reserve(self, req: ScsiRequest) -> ScsiResult:
        try:
            self._res().reserve(req.nexus, bytes(req.cdb))
        except ReservationConflict:
            return _OK(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return _OK(GOOD)

    def release(self, req: ScsiRequest) -> ScsiResult:
        try:
            self._res().release(req.nexus, bytes(req.cdb))
        except ReservationConflict:
            return _OK(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return _OK(GOOD)

    def persistent_reserve_in(self, req: ScsiRequest) -> ScsiResult:
        alloc = _be16(req.cdb, 7)[0]
        data = self._res().persistent_reserve_in(req.nexus, bytes(req.cdb), alloc)
        return _OK(GOOD, data[:alloc])

    def persistent_reserve_out(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        length = _be32(cdb, 5)[0]
        try:
            self._res().persistent_reserve_out(req.nexus, bytes(cdb), bytes(req.data_out[:length]))
        except ReservationConflict:
            return _OK(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return _OK(GOOD)

    # ------------------------------------------------------------ MODE SENSE
    def device_specific_parameter(self) -> int:
        return (0x80 if self.mode.swp or self.read_only else 0) | 0x10  # WP, DPOFUA

    def block_descriptor(self, long_lba: bool) -> bytes:
        blocks = self.volume.num_blocks
        if long_lba:
            return struct.pack(">Q4xI", blocks, self.block_size)
        return struct.pack(">IB", min(blocks, 0xFFFFFFFF), 0) + self.block_size.to_bytes(3, "big")

    def check_block_descriptors(self, bds: bytes, offset: int, long_lba: bool) -> None:
        """Accept one descriptor that restates the capacity (or 0) and the block length."""
        size = 16 if long_lba else 8
        if len(bds) not in (0, size):
            raise invalid_field_in_parameter_list(offset - 1)
        if not bds:
            return
        if long_lba:
            blocks, length = struct.unpack(">Q4xI", bds)
        else:
            blocks = _be32(bds, 0)[0]
            length = int.from_bytes(bds[5:8], "big")
        if blocks not in (0, min(self.volume.num_blocks, 0xFFFFFFFF if not long_lba else 1 << 64)):
            raise invalid_field_in_parameter_list(offset)
        if length != self.block_size:
            raise invalid_field_in_parameter_list(offset + (12 if long_lba else 5))

    # ------------------------------------------------------------------ VPD
    def vpd_pages(self) -> dict[int, object]:
        pages = super().vpd_pages()
        pages[VpdPage.EXTENDED_INQUIRY] = self._vpd_extended
        pages[VpdPage.BLOCK_LIMITS] = self._vpd_block_limits
        pages[VpdPage.BLOCK_DEVICE_CHARACTERISTICS] = self._vpd_characteristics
        if self.thin:
            pages[VpdPage.LOGICAL_BLOCK_PROVISIONING] = self._vpd_provisioning
        return pages

    def _vpd_extended(self, req: ScsiRequest) -> bytes:
        body = bytearray(0x3C)
        body[1] = 0x07  # HEADSUP, ORDSUP, SIMPSUP
        body[2] = 0x02  # NV_SUP: the cache is battery backed
        body[3] = 0x01  # LUICLR: unit attentions are cleared per I_T nexus and LU
        return bytes(body)

    def _vpd_block_limits(self, req: ScsiRequest) -> bytes:
        thin = self.thin
        return struct.pack(
            ">BBHIIIIIIIQIIIII",
            0,  # WSNZ=0
            MAX_COMPARE_AND_WRITE,
            OPTIMAL_GRANULARITY,
            MAX_TRANSFER_BLOCKS,
            OPTIMAL_TRANSFER_BLOCKS,
            self.cache_bytes // self.block_size,  # maximum prefetch length
            MAX_UNMAP_LBA_COUNT if thin else 0,
            MAX_UNMAP_DESCRIPTORS if thin else 0,
            OPTIMAL_UNMAP_GRANULARITY if thin else 0,
            0x80000000 if thin else 0,  # UGAVALID, alignment 0
            MAX_WRITE_SAME_BLOCKS,
            MAX_ATOMIC_BLOCKS,
            0,  # atomic alignment: any
            0,  # atomic granularity: any
            0,  # no atomic boundary support
            0,
        )

    def _vpd_characteristics(self, req: ScsiRequest) -> bytes:
        body = bytearray(0x3C)
        body[0:2] = ROTATION_RATE_RPM.to_bytes(2, "big")
        return bytes(body)

    def _vpd_provisioning(self, req: ScsiRequest) -> bytes:
        # LBPU, LBPWS, LBPWS10, LBPRZ; provisioning type 010b: thin.
        return bytes((0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0))

