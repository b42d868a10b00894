"""PDU framing and field access (RFC 7143 section 11), both directions, no I/O.

A PDU is its 48-byte Basic Header Segment, optional Additional Header Segments and a
data segment. Header fields are read in place from the BHS with struct; builders write
a fresh 48-byte bytearray. Digests are CRC32C, transmitted little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c as _crc32c

from firmware_model.lun_address import decode_lun

from .constants import BHS_LEN, AhsType

_U32 = struct.Struct(">I")
_AHS_HDR = struct.Struct(">HBB")  # AHSLength (from byte 3 on), AHSType, a reserved/specific byte
_U32_LE = struct.Struct("<I")
MAX_AHS_BYTES = 255 * 4


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return _crc32c.crc32c(data)


def digest_bytes(*parts: bytes | bytearray | memoryview) -> bytes:
    crc = 0
    for part in parts:
        crc = _crc32c.crc32c(part, crc)
    return _U32_LE.pack(crc)


def pad_len(n: int) -> int:
    return (-n) & 3


class FramingError(Exception):
    """The byte stream cannot be trusted any more: the connection must close."""


@dataclass(slots=True)
class Pdu:
    bhs: bytes
    ahs: bytes = b""
    data: bytes | bytearray | memoryview = b""
    data_digest_ok: bool = True

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def final(self) -> bool:
        return bool(self.bhs[1] & 0x80)

    @property
    def lun(self) -> int:
        """The LUN field (bytes 8..15) decoded; the target's hot path decodes it in place."""
        return decode_lun(self.bhs[8:16])

    @property
    def itt(self) -> int:
        return _U32.unpack_from(self.bhs, 16)[0]

    def u32(self, offset: int) -> int:
        return _U32.unpack_from(self.bhs, offset)[0]


def u32(buf: bytes | bytearray, offset: int) -> int:
    return _U32.unpack_from(buf, offset)[0]


def extended_cdb_ahs(cdb_tail: bytes | bytearray) -> bytes:
    """The Extended CDB AHS (AHSType 1) carrying a CDB's bytes beyond the 16th."""
    n = len(cdb_tail)
    return _AHS_HDR.pack(n + 1, AhsType.EXTENDED_CDB, 0) + bytes(cdb_tail) + b"\0" * (-n % 4)


def extended_cdb(ahs: bytes, cdb: bytes) -> bytes | None:
    """The whole CDB: the BHS's 16 bytes `cdb` and the Extended CDB AHS; None without one."""
    pos = 0
    while pos + 4 <= len(ahs):
        length, kind, _ = _AHS_HDR.unpack_from(ahs, pos)
        if kind == AhsType.EXTENDED_CDB:
            return cdb + ahs[pos + 4 : pos + 3 + length]
        pos += 4 + ((length - 1 + 3) & ~3) if length else 4
    return None


class PduReader:
    """Splits a byte stream into PDUs. Digest settings change after login."""

    def __init__(self, max_data: int = 1 << 24) -> None:
        self._buf = bytearray()
        self.header_digest = False
        self.data_digest = False
        self.max_data = max_data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def head(self) -> bytes:
        """The next PDU's basic header segment as far as it has arrived."""
        return bytes(self._buf[:BHS_LEN])

    def next_pdu(self) -> Pdu | None:
        buf = self._buf
        if len(buf) < BHS_LEN:
            return None
        ahs_len = buf[4] * 4
        data_len = (buf[5] << 16) | (buf[6] << 8) | buf[7]
        hd = 4 if self.header_digest else 0
        dd = 4 if (self.data_digest and data_len) else 0
        header_end = BHS_LEN + ahs_len
        if data_len > self.max_data:
            raise FramingError(f"data segment of {data_len} bytes exceeds {self.max_data}")
        total = header_end + hd + data_len + pad_len(data_len) + dd
        if len(buf) < total:
            return None
        ok = True
        with memoryview(buf) as mv:
            if hd and mv[header_end : header_end + 4] != digest_bytes(mv[:header_end]):
                raise FramingError("header digest error")
            bhs = bytes(mv[:BHS_LEN])
            ahs = bytes(mv[BHS_LEN:header_end]) if ahs_len else b""
            dstart = header_end + hd
            data = bytes(mv[dstart : dstart + data_len]) if data_len else b""
            if dd:
                padded_end = dstart + data_len + pad_len(data_len)
                ok = mv[padded_end : padded_end + 4] == digest_bytes(mv[dstart:padded_end])
        del buf[:total]
        return Pdu(bhs, ahs, data, ok)


def encode(
    bhs: bytes | bytearray,
    data: bytes | bytearray | memoryview = b"",
    *,
    header_digest: bool = False,
    data_digest: bool = False,
    ahs: bytes = b"",
) -> list[bytes | bytearray | memoryview]:
    """Wire chunks for one PDU; fills in the AHS and data segment lengths."""
    n = len(data)
    if not isinstance(bhs, bytearray):
        bhs = bytearray(bhs)
    bhs[4] = len(ahs) // 4
    bhs[5] = (n >> 16) & 0xFF
    bhs[6] = (n >> 8) & 0xFF
    bhs[7] = n & 0xFF
    head: bytes | bytearray = bhs + ahs if ahs else bhs
    out: list[bytes | bytearray | memoryview] = [head]
    if header_digest:
        out.append(digest_bytes(head))
    if n:
        out.append(data)
        pad = b"\0" * pad_len(n)
        if pad:
            out.append(pad)
        if data_digest:
            out.append(digest_bytes(data, pad))
    return out
