"""The one exception command code raises to answer CHECK CONDITION with precise sense."""

from __future__ import annotations


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


# Shorthands for the errors command code raises most; the numbers are SPC-4 ASC/ASCQ.
def illegal(asc_ascq: int, **kw: int | bool | None) -> ScsiError:
    """ILLEGAL REQUEST with (ASC << 8 | ASCQ)."""
    return ScsiError(0x5, asc_ascq >> 8, asc_ascq & 0xFF, **kw)  # type: ignore[arg-type]


def invalid_field_in_cdb(byte: int, bit: int | None = None) -> ScsiError:
    """24/00 with a field pointer at CDB byte `byte` (bit `bit`) so hosts see what was wrong."""
    return ScsiError(0x5, 0x24, 0x00, field_pointer=byte, bit_pointer=bit, cd=True)


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> ScsiError:
    """26/00 pointing at byte `byte` of the parameter list."""
    return ScsiError(0x5, 0x26, 0x00, field_pointer=byte, bit_pointer=bit, cd=False)


def parameter_list_length_error() -> ScsiError:
    return ScsiError(0x5, 0x1A, 0x00)


def lba_out_of_range(lba: int | None = None) -> ScsiError:
    """21/00; the INFORMATION field carries the offending LBA when it fits in 64 bits."""
    info = lba if lba is not None and 0 <= lba < 1 << 64 else None
    return ScsiError(0x5, 0x21, 0x00, info=info)


def invalid_opcode() -> ScsiError:
    return ScsiError(0x5, 0x20, 0x00, field_pointer=0, cd=True)


def miscompare(offset: int) -> ScsiError:
    """MISCOMPARE 1D/00; INFORMATION = byte offset of the first differing byte."""
    return ScsiError(0xE, 0x1D, 0x00, info=offset)
