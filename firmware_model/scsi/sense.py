"""Sense data in fixed (0x70) or descriptor (0x72) format (SPC-4 4.5).

The control mode page's D_SENSE bit picks the format per logical unit; the same
ScsiError renders into either.
"""

from __future__ import annotations

from firmware_model.scsi.errors import ScsiError

FIXED_LEN = 18


def _sks(err: ScsiError) -> bytes | None:
    """Sense-key-specific field pointer bytes (SKSV set), or None when there is none."""
    if err.field_pointer is None:
        return None
    b0 = 0x80 | (0x40 if err.cd else 0)
    if err.bit_pointer is not None:
        b0 |= 0x08 | (err.bit_pointer & 0x7)
    fp = err.field_pointer & 0xFFFF
    return bytes((b0, fp >> 8, fp & 0xFF))


def build_sense(err: ScsiError, descriptor: bool = False) -> bytes:
    """Render `err` as current-error sense data."""
    sks = _sks(err)
    if descriptor:
        body = bytearray()
        if err.info is not None:
            body += b"\x00\x0a\x80\x00" + (err.info & (1 << 64) - 1).to_bytes(8, "big")
        if sks is not None:
            body += b"\x02\x06\x00\x00" + sks + b"\x00"
        hdr = bytes((0x72, err.key & 0xF, err.asc, err.ascq, 0, 0, 0, len(body)))
        return hdr + bytes(body)
    buf = bytearray(FIXED_LEN)
    buf[0] = 0x70
    buf[2] = err.key & 0xF
    if err.info is not None:
        if err.info < 1 << 32:
            buf[0] |= 0x80  # VALID: the INFORMATION field holds the whole value
        buf[3:7] = (err.info & 0xFFFFFFFF).to_bytes(4, "big")
    buf[7] = FIXED_LEN - 8
    buf[12] = err.asc
    buf[13] = err.ascq
    if sks is not None:
        buf[15:18] = sks
    return bytes(buf)


def sense_for(key: int, asc_ascq: int, descriptor: bool = False) -> bytes:
    """Plain sense (no information, no pointer), e.g. for unit attentions."""
    return build_sense(ScsiError(key, asc_ascq >> 8, asc_ascq & 0xFF), descriptor)
