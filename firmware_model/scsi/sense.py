"""Sense data in fixed (0x70/0x71) or descriptor (0x72/0x73) format (SPC-4 4.5).

The only place sense bytes are built. The control mode page's D_SENSE bit picks the
format per logical unit; the same ScsiError renders into either. The transport uses
`fixed_sense` for the answers it gives itself (e.g. a data digest error).
"""

from __future__ import annotations

from firmware_model.scsi.errors import ScsiError

FIXED_LEN = 18
_MASK64 = (1 << 64) - 1


def encode_sense(
    key: int,
    asc: int,
    ascq: int,
    *,
    information: int | None = None,
    sks: bytes | None = None,
    descriptor: bool = False,
    deferred: bool = False,
) -> bytes:
    """Sense data for one error: `sks` is the 3-byte sense-key-specific field (SKSV set),
    `deferred` reports an error of an earlier, already completed command (SPC-4 4.5.5)."""
    if descriptor:
        body = bytearray()
        if information is not None:
            body += b"\x00\x0a\x80\x00" + (information & _MASK64).to_bytes(8, "big")
        if sks is not None:
            body += b"\x02\x06\x00\x00" + sks + b"\x00"
        code = 0x73 if deferred else 0x72
        return bytes((code, key & 0xF, asc, ascq, 0, 0, 0, len(body))) + bytes(body)
    buf = bytearray(FIXED_LEN)
    buf[0] = 0x71 if deferred else 0x70
    buf[2] = key & 0xF
    if information is not None:
        if information < 1 << 32:
            buf[0] |= 0x80  # VALID: the INFORMATION field holds the whole value
        buf[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    buf[7] = FIXED_LEN - 8
    buf[12] = asc
    buf[13] = ascq
    if sks is not None:
        buf[15:18] = sks
    return bytes(buf)


def fixed_sense(key: int, asc: int, ascq: int, information: int | None = None) -> bytes:
    """Fixed-format (0x70) current-error sense data, 18 bytes; VALID is set when
    `information` is given and fits the 4-byte INFORMATION field."""
    return encode_sense(key, asc, ascq, information=information)


def _sks(err: ScsiError) -> bytes | None:
    """Sense-key-specific field pointer bytes (SKSV set), or None when there is none."""
    if err.field_pointer is None:
        return None
    b0 = 0x80 | (0x40 if err.cd else 0)
    if err.bit_pointer is not None:
        b0 |= 0x08 | (err.bit_pointer & 0x7)
    fp = err.field_pointer & 0xFFFF
    return bytes((b0, fp >> 8, fp & 0xFF))


def build_sense(err: ScsiError, descriptor: bool = False, *, deferred: bool = False) -> bytes:
    """Render `err` as sense data (a current error unless `deferred`)."""
    return encode_sense(
        err.key,
        err.asc,
        err.ascq,
        information=err.info,
        sks=_sks(err),
        descriptor=descriptor,
        deferred=deferred,
    )


def sense_for(key: int, asc_ascq: int, descriptor: bool = False) -> bytes:
    """Plain sense (no information, no pointer), e.g. for unit attentions."""
    return encode_sense(key, asc_ascq >> 8, asc_ascq & 0xFF, descriptor=descriptor)
