"""What a logical drive tells about itself: READ CAPACITY, the SBC VPD pages, the mode
parameter block descriptor, and (empty) READ DEFECT DATA (SBC-3 5.15/5.16, 6.5)."""

from __future__ import annotations

import struct

from firmware_model.scsi.catalog import ReadCapacity10, ReadCapacity16, ReadDefectData10, ReadDefectData12
from firmware_model.scsi.constants import Opcode, VpdPage
from firmware_model.scsi.errors import invalid_field_in_parameter_list
from firmware_model.scsi.sbc_base import (
    MAX_ATOMIC_BLOCKS,
    MAX_COMPARE_AND_WRITE,
    MAX_TRANSFER_BLOCKS,
    MAX_UNMAP_DESCRIPTORS,
    MAX_UNMAP_LBA_COUNT,
    MAX_WRITE_SAME_BLOCKS,
    OPTIMAL_GRANULARITY,
    OPTIMAL_TRANSFER_BLOCKS,
    OPTIMAL_UNMAP_GRANULARITY,
    BlockBase,
)
from firmware_model.scsi.types import ScsiRequest, ScsiResult, Status

GOOD = Status.GOOD
ROTATION_RATE_RPM = 15000
_be32 = struct.Struct(">I").unpack_from


class BlockInfo(BlockBase):
    """READ CAPACITY(10/16), READ DEFECT DATA(10/12), VPD pages 0x86/0xB0/0xB1/0xB2 and the
    MODE SENSE/SELECT block descriptor."""

    # ----------------------------------------------------- READ CAPACITY
    def read_capacity10(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if not ReadCapacity10.pmi(cdb) and ReadCapacity10.lba(cdb):
            raise ReadCapacity10.lba.invalid()
        last = min(self.volume.num_blocks - 1, 0xFFFFFFFF)
        return ScsiResult(GOOD, struct.pack(">II", last, self.block_size))

    def read_capacity16(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        if not ReadCapacity16.pmi(cdb) and ReadCapacity16.lba(cdb):
            raise ReadCapacity16.lba.invalid()
        alloc = ReadCapacity16.alloc(cdb)
        lbp = 0xC0 if self.thin else 0x00  # LBPME, LBPRZ
        data = struct.pack(">QIBBBB", self.volume.num_blocks - 1, self.block_size, 0, 0, lbp, 0)
        return ScsiResult(GOOD, (data + bytes(16))[:alloc])

    # ----------------------------------------------------- defects
    def read_defect_data(self, req: ScsiRequest) -> ScsiResult:
        """An array logical drive has no grown or primary defects to show: empty lists whose
        header repeats the lists and format asked for."""
        cdb = req.cdb
        if cdb[0] == Opcode.READ_DEFECT_DATA_10:
            f10 = ReadDefectData10
            asked = (f10.plist(cdb) << 4) | (f10.glist(cdb) << 3) | f10.format(cdb)
            data = bytes((0, asked, 0, 0))
            alloc = f10.alloc(cdb)
        else:
            f12 = ReadDefectData12
            asked = (f12.plist(cdb) << 4) | (f12.glist(cdb) << 3) | f12.format(cdb)
            data = bytes((0, asked, 0, 0, 0, 0, 0, 0))
            alloc = f12.alloc(cdb)
        return ScsiResult(GOOD, data[:alloc])

    # ----------------------------------------------------- MODE SENSE/SELECT
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

    # ----------------------------------------------------- VPD
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
