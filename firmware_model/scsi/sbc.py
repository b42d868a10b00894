"""Logical drives: the SBC-3 block command set over a BlockVolume.

`BlockUnit` puts together the command groups (sbc_rw: the data path, sbc_provisioning:
WRITE SAME/UNMAP/GET LBA STATUS, sbc_info: capacity, VPD and block descriptors) and
adds the unit state commands: START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, and the
SPC-2 and persistent reservation commands, which it hands to its reservations object.
"""

from __future__ import annotations

from firmware_model.scsi.catalog import PersistentReserveIn, PersistentReserveOut, PreventAllow, StartStopUnit
from firmware_model.scsi.constants import Asc, VersionDescriptor
from firmware_model.scsi.errors import illegal, invalid_opcode, write_protected
from firmware_model.scsi.pr_state import ReservationConflict
from firmware_model.scsi.sbc_base import CACHE_BYTES, MAX_TRANSFER_BLOCKS
from firmware_model.scsi.sbc_info import BlockInfo
from firmware_model.scsi.sbc_provisioning import BlockProvisioning
from firmware_model.scsi.sbc_rw import BlockReadWrite
from firmware_model.scsi.types import ScsiRequest, ScsiResult, Status
from firmware_model.scsi.units import ReservationsLike

__all__ = ["CACHE_BYTES", "MAX_TRANSFER_BLOCKS", "BlockUnit", "write_protected"]

GOOD = Status.GOOD
_POWER_CONDITIONS = frozenset((0x0, 0x1, 0x2, 0x3, 0x7, 0xA, 0xB))


class BlockUnit(BlockReadWrite, BlockProvisioning, BlockInfo):
    """A logical drive (peripheral type 0x00) backed by `volume`."""

    versions = [
        VersionDescriptor.SAM_5,
        VersionDescriptor.ISCSI,
        VersionDescriptor.SPC_4,
        VersionDescriptor.SBC_3,
    ]

    # ---------------------------------------------------- START STOP, PREVENT
    def start_stop_unit(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        power = StartStopUnit.power(cdb)
        if power not in _POWER_CONDITIONS:
            raise StartStopUnit.power.invalid()
        if power:
            return ScsiResult(GOOD)  # power conditions only: START and LOEJ are ignored
        if StartStopUnit.start(cdb):
            self.ready = True
            return ScsiResult(GOOD)
        if StartStopUnit.loej(cdb) and self._prevent:
            raise illegal(Asc.MEDIUM_REMOVAL_PREVENTED)
        if not StartStopUnit.no_flush(cdb):
            self.volume.flush()
        self.ready = False
        return ScsiResult(GOOD)

    def prevent_allow(self, req: ScsiRequest) -> ScsiResult:
        prevent = PreventAllow.prevent(req.cdb)
        if prevent > 1:
            raise PreventAllow.prevent.invalid()
        if prevent:
            self._prevent.add(req.nexus)
        else:
            self._prevent.discard(req.nexus)
        return ScsiResult(GOOD)

    # ------------------------------------------------------------ reservations
    def _res(self) -> ReservationsLike:
        if self.reservations is None:
            raise invalid_opcode()
        return self.reservations

    def reserve(self, req: ScsiRequest) -> ScsiResult:
        try:
            self._res().reserve(req.nexus, bytes(req.cdb))
        except ReservationConflict:
            return ScsiResult(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return ScsiResult(GOOD)

    def release(self, req: ScsiRequest) -> ScsiResult:
        try:
            self._res().release(req.nexus, bytes(req.cdb))
        except ReservationConflict:
            return ScsiResult(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return ScsiResult(GOOD)

    def persistent_reserve_in(self, req: ScsiRequest) -> ScsiResult:
        alloc = PersistentReserveIn.alloc(req.cdb)
        data = self._res().persistent_reserve_in(req.nexus, bytes(req.cdb), alloc)
        return ScsiResult(GOOD, data[:alloc])

    def persistent_reserve_out(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        length = PersistentReserveOut.length(cdb)
        try:
            self._res().persistent_reserve_out(req.nexus, bytes(cdb), bytes(req.data_out[:length]))
        except ReservationConflict:
            return ScsiResult(Status.RESERVATION_CONFLICT)
        finally:
            self._drain_unit_attentions()
        return ScsiResult(GOOD)
