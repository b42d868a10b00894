"""Logical block provisioning of a logical drive: WRITE SAME, UNMAP, GET LBA STATUS (SBC-3 4.7).

Deallocation needs a thin volume (one with `unmap` and `mapping`); on a fully
provisioned one every block reads as mapped and UNMAP is not offered.
"""

from __future__ import annotations

import struct
from typing import Any

from firmware_model.scsi.catalog import ServiceActionIn16Cdb, Unmap, WriteSame10, WriteSame16
from firmware_model.scsi.constants import Opcode
from firmware_model.scsi.errors import (
    invalid_field_in_parameter_list,
    lba_out_of_range,
    parameter_list_length_error,
)
from firmware_model.scsi.sbc_base import (
    MAX_UNMAP_DESCRIPTORS,
    MAX_UNMAP_LBA_COUNT,
    MAX_WRITE_SAME_BLOCKS,
    BlockBase,
)
from firmware_model.scsi.stepped import Stepped, Work, run_to_end
from firmware_model.scsi.types import ScsiRequest, ScsiResult, Status

GOOD = Status.GOOD
_CHUNK = 1 << 20
_WS10 = WriteSame10.unpacker(WriteSame10.lba, WriteSame10.length)
_WS16 = WriteSame16.unpacker(WriteSame16.lba, WriteSame16.length)
_be16 = struct.Struct(">H").unpack_from
_be32 = struct.Struct(">I").unpack_from
_be64 = struct.Struct(">Q").unpack_from


class BlockProvisioning(BlockBase):
    """WRITE SAME(10/16), UNMAP and GET LBA STATUS."""

    def write_same(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if cdb[0] == Opcode.WRITE_SAME_10:
            lba, count = _WS10(cdb)
            blocks_field = WriteSame10.length
            ndob = False
        else:
            lba, count = _WS16(cdb)
            blocks_field = WriteSame16.length
            ndob = bool(WriteSame16.ndob(cdb))
        unmap = bool(WriteSame10.unmap(cdb))
        total = self.volume.num_blocks
        if lba > total:
            raise lba_out_of_range(lba)
        if count == 0:
            count = total - lba  # WSNZ=0: zero means up to the last LBA
        self._range(lba, count)
        if count > MAX_WRITE_SAME_BLOCKS:
            raise blocks_field.invalid()
        self._writable()
        bs = self.block_size
        if ndob:
            block = bytes(bs)
        else:
            block = bytes(self._data(req, bs))
        if count == 0:
            return ScsiResult(GOOD)
        vol: Any = self.volume
        if unmap and self.thin:
            # UNMAP=1 deallocates whatever the pattern (as tgt does, and libiscsi expects);
            # the blocks then read back as zeros (LBPRZ).
            vol.unmap(lba, count)
            return ScsiResult(GOOD)
        per = max(1, _CHUNK // bs)
        work = self._write_same_steps(vol, lba, count, block * min(per, count))
        if count <= per:  # one step: at once
            return run_to_end(work)
        return Stepped(work=work)  # megabytes: a step per MiB, other sessions served between (stepped.py)

    def _write_same_steps(self, vol: Any, lba: int, count: int, chunk: bytes) -> Work:
        bs = self.block_size
        per = len(chunk) // bs
        pos = lba
        end = lba + count
        while pos < end:
            n = min(per, end - pos)
            vol.write(pos, chunk if n == per else chunk[: n * bs])
            pos += n
            if pos < end:
                yield None
        if not self.mode.wce:
            yield from self._flush_steps(lba, count)
        return ScsiResult(GOOD)

    def unmap(self, req: ScsiRequest) -> ScsiResult:
        length = Unmap.length(req.cdb)
        if length == 0:
            return ScsiResult(GOOD)
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
        return ScsiResult(GOOD)

    def get_lba_status(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        lba = ServiceActionIn16Cdb.lba(cdb)
        alloc = ServiceActionIn16Cdb.alloc(cdb)
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
        return ScsiResult(GOOD, data[:alloc])
