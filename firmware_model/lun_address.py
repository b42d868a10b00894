"""The 8-byte LUN field (SAM-5 4.7): single-level addressing, the one codec every side uses.

LUNs below 256 use peripheral device addressing (method 00b, bus 0), LUNs 256..16383 flat
space addressing (method 01b): what REPORT LUNS lists and what hosts send back. Standard
library only, so the firmware, the iSCSI target, the initiator and the agents can share it.
"""

from __future__ import annotations

LUN_FIELD_LEN = 8
MAX_PERIPHERAL_LUN = 0xFF
MAX_FLAT_LUN = 0x3FFF
# What decode_lun answers for an addressing method the shelf does not use (logical unit,
# extended): a LUN number no shelf has, so the command finds no logical unit there.
NO_LUN = 0xFFFF

_METHOD_PERIPHERAL = 0x00
_METHOD_FLAT = 0x40
_TAIL = bytes(LUN_FIELD_LEN - 2)  # second to fourth levels: none


def encode_lun(lun: int) -> bytes:
    """The 8-byte field for `lun`: peripheral addressing below 256, flat space up to 16383."""
    if 0 <= lun <= MAX_PERIPHERAL_LUN:
        return bytes((_METHOD_PERIPHERAL, lun)) + _TAIL
    if 0 <= lun <= MAX_FLAT_LUN:
        return bytes((_METHOD_FLAT | lun >> 8, lun & 0xFF)) + _TAIL
    raise ValueError(f"LUN {lun} cannot be addressed (single-level LUNs are 0..{MAX_FLAT_LUN})")


def decode_lun(field: bytes) -> int:
    """LUN from the first level of the field: peripheral (00b) and flat (01b) addressing.

    A peripheral address with a nonzero bus identifier reads as bus << 8 | target; any
    other method gives NO_LUN. The lower levels (bytes 2..7) are not looked at.
    """
    method = field[0] >> 6
    if method == 0:
        return field[1] if field[0] == 0 else (field[0] & 0x3F) << 8 | field[1]
    if method == 1:
        return (field[0] & 0x3F) << 8 | field[1]
    return NO_LUN
