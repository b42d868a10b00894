"""What the controller answers when it cannot: refused operations, and the sense data hosts get.

Sense data chosen for a failed logical drive (see ARCHITECTURE "Errors are answers"):
- media-access commands, TEST UNIT READY included: NOT READY, 04/03 LOGICAL UNIT NOT READY,
  MANUAL INTERVENTION REQUIRED (hpsa's `hpsa_volume_offline` expects a failed Smart Array
  volume to answer TEST UNIT READY with NOT READY/ASC 04);
- the command during which the unit fails: HARDWARE ERROR, 3E/01 LOGICAL UNIT FAILURE;
- a read the redundancy cannot cover: MEDIUM ERROR, 11/00 UNRECOVERED READ ERROR, with the
  first bad LBA in the INFORMATION field.
"""

from __future__ import annotations

from ..scsi.constants import Asc, SenseKey
from ..scsi.errors import ScsiError, scsi_error

CAPACITY_DATA_HAS_CHANGED = Asc.CAPACITY_DATA_HAS_CHANGED  # unit attention after EXTEND UNIT
MODE_PARAMETERS_CHANGED = Asc.MODE_PARAMETERS_CHANGED


class ShelfError(Exception):
    """A shelf that cannot be built or opened as described."""


class ControllerError(ShelfError):
    """An operation refused: the message names the problem in one line."""


def unit_failed_sense() -> ScsiError:
    """HARDWARE ERROR 3E/01 LOGICAL UNIT FAILURE: the unit failed during this command."""
    return scsi_error(SenseKey.HARDWARE_ERROR, Asc.LOGICAL_UNIT_FAILURE)


def unit_offline_sense() -> ScsiError:
    """NOT READY 04/03 MANUAL INTERVENTION REQUIRED: a failed logical drive."""
    return scsi_error(SenseKey.NOT_READY, Asc.NOT_READY_MANUAL_INTERVENTION_REQUIRED)


def becoming_ready_sense() -> ScsiError:
    """NOT READY 04/01 IN PROCESS OF BECOMING READY: drives spinning up after power on."""
    return scsi_error(SenseKey.NOT_READY, Asc.NOT_READY_BECOMING_READY)


def powered_off_sense() -> ScsiError:
    """NOT READY 04/00: the shelf has no power (the process drops connections anyway)."""
    return scsi_error(SenseKey.NOT_READY, Asc.NOT_READY_CAUSE_NOT_REPORTABLE)


def cache_data_lost_sense(lba: int) -> ScsiError:
    """MEDIUM ERROR 0C/00 WRITE ERROR, reported as a deferred error: acknowledged writes
    from the cache were lost; INFORMATION holds the first lost LBA."""
    return scsi_error(SenseKey.MEDIUM_ERROR, Asc.WRITE_ERROR, info=lba)


def unrecovered_read(lba: int) -> ScsiError:
    """MEDIUM ERROR 11/00 with the first bad LBA in the INFORMATION field."""
    return scsi_error(SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR, info=lba)
