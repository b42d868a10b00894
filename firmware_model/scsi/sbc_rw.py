"""The data path of a logical drive: READ, WRITE, VERIFY, COMPARE AND WRITE and kin (SBC-3).

READ/WRITE 10/16 are the hot path: one precompiled struct unpack, one range check, one
volume call, and the volume's bytes handed back as they are.
"""

from __future__ import annotations

from firmware_model.scsi.catalog import (
    CompareAndWrite,
    Rw6,
    Rw10,
    Rw12,
    Rw16,
    RwFlags,
    VerifyFlags,
    WriteAtomic16,
    WriteVerifyFlags,
)
from firmware_model.scsi.errors import (
    invalid_field_in_cdb,
    lba_out_of_range,
    miscompare,
    write_protected,
)
from firmware_model.scsi.sbc_base import (
    MAX_ATOMIC_BLOCKS,
    MAX_COMPARE_AND_WRITE,
    MAX_TRANSFER_BLOCKS,
    BlockBase,
)
from firmware_model.scsi.stepped import Stepped, Work, run_to_end
from firmware_model.scsi.types import ScsiRequest, ScsiResult, Status

GOOD = Status.GOOD
_OK = ScsiResult  # alias kept short on the hot path

_R10 = Rw10.unpacker(Rw10.lba, Rw10.length)
_R12 = Rw12.unpacker(Rw12.lba, Rw12.length)
_R16 = Rw16.unpacker(Rw16.lba, Rw16.length)
_TL10, _TL12, _TL16 = Rw10.length.byte, Rw12.length.byte, Rw16.length.byte
_FUA_BYTE, _FUA = RwFlags.fua.byte, RwFlags.fua.mask  # the same bit in every READ/WRITE CDB


def _first_difference(a: bytes, b: bytes) -> int:
    """Offset of the first byte where a and b differ (they must differ)."""
    step = 4096
    for base in range(0, min(len(a), len(b)), step):
        if a[base : base + step] != b[base : base + step]:
            for i in range(base, min(base + step, len(a), len(b))):
                if a[i] != b[i]:
                    return i
    return min(len(a), len(b))


class BlockReadWrite(BlockBase):
    """READ/WRITE(6/10/12/16), WRITE ATOMIC, WRITE AND VERIFY, VERIFY, ORWRITE, COMPARE AND
    WRITE, and the cache commands SYNCHRONIZE CACHE and PRE-FETCH."""

    def _read(self, lba: int, count: int, tl_byte: int) -> ScsiResult:
        if lba + count > self.volume.num_blocks:
            raise lba_out_of_range(lba)
        if count == 0:
            return _OK(GOOD)
        if count > MAX_TRANSFER_BLOCKS:
            raise invalid_field_in_cdb(tl_byte)
        return _OK(GOOD, self.volume.read(lba, count))

    def _write(self, req: ScsiRequest, lba: int, count: int, fua: int, tl_byte: int) -> ScsiResult:
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
            return Stepped(work=self._synced(lba, count))  # the sync off the event loop (stepped.py)
        return _OK(GOOD)

    def _synced(self, lba: int, count: int | None) -> Work:
        yield from self._flush_steps(lba, count)
        return _OK(GOOD)

    def read10(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _R10(req.cdb)
        return self._read(lba, count, _TL10)

    def read16(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _R16(req.cdb)
        return self._read(lba, count, _TL16)

    def read12(self, req: ScsiRequest) -> ScsiResult:
        lba, count = _R12(req.cdb)
        return self._read(lba, count, _TL12)

    def read6(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        return self._read(Rw6.lba(cdb), Rw6.length(cdb) or 256, Rw6.length.byte)

    def write10(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _R10(cdb)
        return self._write(req, lba, count, cdb[_FUA_BYTE] & _FUA, _TL10)

    def write16(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _R16(cdb)
        return self._write(req, lba, count, cdb[_FUA_BYTE] & _FUA, _TL16)

    def write12(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count = _R12(cdb)
        return self._write(req, lba, count, cdb[_FUA_BYTE] & _FUA, _TL12)

    def write6(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        return self._write(req, Rw6.lba(cdb), Rw6.length(cdb) or 256, 0, Rw6.length.byte)

    def write_atomic16(self, req: ScsiRequest) -> ScsiResult:
        """WRITE ATOMIC(16): every write here is applied whole before the next command runs."""
        cdb = req.cdb
        count = WriteAtomic16.length(cdb)
        if count > MAX_ATOMIC_BLOCKS:
            raise WriteAtomic16.length.invalid()
        return self._write(req, WriteAtomic16.lba(cdb), count, WriteAtomic16.fua(cdb), WriteAtomic16.length.byte)

    def write_and_verify(self, req: ScsiRequest) -> ScsiResult:
        """WRITE AND VERIFY: written through to the medium (as FUA), then read back."""
        cdb = req.cdb
        lba, count, tl_byte = self._lba_len(cdb)
        res = self._write(req, lba, count, True, tl_byte)
        if isinstance(res, Stepped) and res.work is not None:  # synced before the read-back, as always
            res = run_to_end(res.work)
        if count and WriteVerifyFlags.bytchk(cdb):
            written = self._data(req, count * self.block_size, partial=True)
            back = self.volume.read(lba, count)[: len(written)]
            if back != written:
                raise miscompare(_first_difference(back, bytes(written)))
        return res

    def verify(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba, count, tl_byte = self._lba_len(cdb)
        bytchk = VerifyFlags.bytchk(cdb)
        if bytchk == 2:
            raise VerifyFlags.bytchk.invalid()
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
        lba, count = _R16(cdb)
        self._range(lba, count)
        self._writable()
        if count == 0:
            return _OK(GOOD)
        self._check_len(count, _TL16)
        length = count * self.block_size
        old = self.volume.read(lba, count)
        new = int.from_bytes(old, "big") | int.from_bytes(self._data(req, length), "big")
        self.volume.write(lba, new.to_bytes(length, "big"))
        if cdb[_FUA_BYTE] & _FUA or not self.mode.wce:
            self._flush(lba, count)
        return _OK(GOOD)

    def compare_and_write(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba = CompareAndWrite.lba(cdb)
        count = CompareAndWrite.length(cdb)
        if count == 0:
            # A count that wrapped (256 and up) still arrives with data; refuse it.
            if req.expected_length or len(req.data_out):
                raise CompareAndWrite.length.invalid()
            self._range(lba, 0)
            return _OK(GOOD)
        if count > MAX_COMPARE_AND_WRITE:
            raise CompareAndWrite.length.invalid()
        self._range(lba, count)
        self._writable()
        length = count * self.block_size
        data = bytes(self._data(req, 2 * length))
        current = self.volume.read(lba, count)
        if current != data[:length]:
            raise miscompare(_first_difference(current, data[:length]))
        self.volume.write(lba, data[length:])
        if cdb[_FUA_BYTE] & _FUA or not self.mode.wce:
            self._flush(lba, count)
        return _OK(GOOD)

    # --------------------------------------------------------------- cache
    def synchronize_cache(self, req: ScsiRequest) -> ScsiResult:
        lba, count, _ = self._lba_len(req.cdb)
        self._range(lba, count)
        return Stepped(work=self._synced(lba, count or None))  # 0: to the last LBA

    def prefetch(self, req: ScsiRequest) -> ScsiResult:
        """CONDITION MET when the range fits in the cache, GOOD when it does not."""
        lba, count, _ = self._lba_len(req.cdb)
        self._range(lba, count)
        if count * self.block_size <= self.cache_bytes:
            return _OK(Status.CONDITION_MET)
        return _OK(GOOD)
