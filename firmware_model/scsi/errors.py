"""The one exception command code raises to answer CHECK CONDITION with precise sense.

The shorthands below name the errors command code raises most, on the SenseKey/Asc enums;
sense.py renders any of them into sense bytes.
"""

from __future__ import annotations

from firmware_model.scsi.constants import Asc, SenseKey


class ScsiError(Exception):
    """Bad input or a failed command: the dispatcher turns it into CHECK CONDITION.

    `info` fills the INFORMATION field (LBA or miscompare offset); `field_pointer` and
    `bit_pointer` fill the sense-key-specific field pointer, which points into the CDB
    when `cd` is true and into the parameter list otherwise.
    """

    def __init__(
        self,
        key: int,
        asc: int,
        ascq: int,
        *,
        info: int | None = None,
        field_pointer: int | None = None,
        bit_pointer: int | None = None,
        cd: bool = True,
    ) -> None:
        super().__init__(f"sense {key:#x} {asc:02x}/{ascq:02x}")
        self.key = key
        self.asc = asc
        self.ascq = ascq
        self.info = info
        self.field_pointer = field_pointer
        self.bit_pointer = bit_pointer
        self.cd = cd


def scsi_error(key: SenseKey, code: Asc, *, info: int | None = None) -> ScsiError:
    """`key` with `code` (ASC << 8 | ASCQ), e.g. for NOT READY or UNIT ATTENTION answers."""
    return ScsiError(key, code >> 8, code & 0xFF, info=info)


def illegal(
    asc_ascq: int, *, field_pointer: int | None = None, bit_pointer: int | None = None, cd: bool = True
) -> ScsiError:
    """ILLEGAL REQUEST with (ASC << 8 | ASCQ)."""
    return ScsiError(
        SenseKey.ILLEGAL_REQUEST,
        asc_ascq >> 8,
        asc_ascq & 0xFF,
        field_pointer=field_pointer,
        bit_pointer=bit_pointer,
        cd=cd,
    )


def invalid_field_in_cdb(byte: int | None = None, bit: int | None = None) -> ScsiError:
    """24/00 with a field pointer at CDB byte `byte` (bit `bit`) so hosts see what was wrong;
    no pointer when `byte` is None (a CDB too short to hold the command)."""
    return illegal(Asc.INVALID_FIELD_IN_CDB, field_pointer=byte, bit_pointer=bit, cd=True)


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> ScsiError:
    """26/00 pointing at byte `byte` of the parameter list."""
    return illegal(Asc.INVALID_FIELD_IN_PARAMETER_LIST, field_pointer=byte, bit_pointer=bit, cd=False)


def parameter_list_length_error() -> ScsiError:
    return illegal(Asc.PARAMETER_LIST_LENGTH_ERROR)


def lba_out_of_range(lba: int | None = None) -> ScsiError:
    """21/00; the INFORMATION field carries the offending LBA when it fits in 64 bits."""
    info = lba if lba is not None and 0 <= lba < 1 << 64 else None
    return ScsiError(SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE >> 8, 0, info=info)


def invalid_opcode() -> ScsiError:
    return illegal(Asc.INVALID_COMMAND_OPERATION_CODE, field_pointer=0)


def miscompare(offset: int) -> ScsiError:
    """MISCOMPARE 1D/00; INFORMATION = byte offset of the first differing byte."""
    return scsi_error(SenseKey.MISCOMPARE, Asc.MISCOMPARE_DURING_VERIFY, info=offset)


def not_ready() -> ScsiError:
    """NOT READY 04/02: stopped by START STOP UNIT until a START=1 arrives."""
    return scsi_error(SenseKey.NOT_READY, Asc.NOT_READY_INITIALIZING_COMMAND_REQUIRED)


def write_protected() -> ScsiError:
    """DATA PROTECT 27/02: SWP in the control page (or a read-only drive)."""
    return scsi_error(SenseKey.DATA_PROTECT, Asc.SOFTWARE_WRITE_PROTECTED)


def internal_target_failure() -> ScsiError:
    """HARDWARE ERROR 44/00: the target's own fault (a bug, or its storage refused)."""
    return scsi_error(SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE)


def short_data_out() -> ScsiError:
    """0E/03 INVALID FIELD IN COMMAND INFORMATION UNIT: less data-out than the CDB asks for."""
    return illegal(Asc.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT)
