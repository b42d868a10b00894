"""The sending half of a connection: what the target writes, sans-I/O.

StatSN, ExpCmdSN and MaxCmdSN stamping, digests, the SCSI Response with its residuals and
Data-In split by MaxRecvDataSegmentLength and MaxBurstLength. `Connection` is a
ResponseWriter: these are its own methods, so the per-command path calls them directly.
"""

from __future__ import annotations

import struct

from firmware_model.scsi.types import DataDirection

from .constants import BHS_LEN, RESERVED_TAG, Op
from .node import Session
from .pdu import encode

_HDR = struct.Struct(">III")
SENSE_LEN = struct.Struct(">H")


class ResponseWriter:
    """The output of one connection, and the builders of the PDUs that go into it."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.out: list[bytes | bytearray | memoryview] = []
        self.out_bytes = 0  # bytes in `out`, not yet taken by the shell
        self.stat_sn = 0
        self.hd = False
        self.dd = False
        self.max_send = 8192  # the initiator's MaxRecvDataSegmentLength

    def _send(self, bhs: bytearray, data: bytes | bytearray | memoryview = b"") -> None:
        self.out.extend(encode(bhs, data, header_digest=self.hd, data_digest=self.dd))
        self.out_bytes += BHS_LEN + len(data)

    def _seq(self, bhs: bytearray, advance: bool = True) -> None:
        """Fill StatSN, ExpCmdSN, MaxCmdSN at offset 24."""
        s = self.session
        assert s is not None
        _HDR.pack_into(bhs, 24, self.stat_sn, s.exp_cmd_sn, s.max_cmd_sn)
        if advance:
            self.stat_sn = (self.stat_sn + 1) & 0xFFFFFFFF

    def reply(self, bhs: bytearray, data: bytes | bytearray | memoryview = b"") -> None:
        """Send a response PDU that takes the next StatSN."""
        self._seq(bhs)
        self._send(bhs, data)

    def _respond(self, itt: int, edtl: int, status: int, sense: bytes, data: bytes | bytearray | memoryview,
                 direction: DataDirection, wanted: int | None = None) -> None:
        """Status (and data-in) for a command; residuals per RFC 7143 11.4.5.

        `wanted` is the data-out length a write's CDB asked for; other commands are measured
        by the data they produced.
        """
        n = len(data)
        if direction == DataDirection.WRITE:
            n = edtl if wanted is None else wanted
            data = b""
        residual_flags = 0
        residual = 0
        if n > edtl:
            residual_flags, residual = 0x04, n - edtl  # O: overflow
        elif n < edtl:
            residual_flags, residual = 0x02, edtl - n  # U: underflow
        if direction == DataDirection.READ and data and edtl:
            send = memoryview(data)[:edtl] if len(data) > edtl else data
            self._data_in(itt, send, status, residual_flags, residual, with_status=not sense)
            self.out_bytes += len(send)
            if not sense:
                return
        bhs = bytearray(48)
        bhs[0] = Op.SCSI_RSP
        bhs[1] = 0x80 | residual_flags
        bhs[2] = 0  # command completed at target
        bhs[3] = status
        struct.pack_into(">I", bhs, 16, itt)
        self._seq(bhs)
        struct.pack_into(">I", bhs, 44, residual)
        self._send(bhs, SENSE_LEN.pack(len(sense)) + sense if sense else b"")

    def _data_in(self, itt: int, data: bytes | bytearray | memoryview, status: int, rflags: int,
                 residual: int, with_status: bool) -> None:
        s = self.session
        assert s is not None
        total = len(data)
        seg = self.max_send
        burst = s.params.max_burst_length
        view = memoryview(data)
        datasn = 0
        offset = 0
        hd, dd = self.hd, self.dd
        out = self.out
        while offset < total:
            chunk = min(seg, total - offset)
            last = offset + chunk >= total
            bhs = bytearray(48)
            bhs[0] = Op.DATA_IN
            flags = 0
            if last:
                flags = 0x80
                if with_status:
                    flags |= 0x01 | rflags
                    bhs[3] = status
            elif (offset + chunk) % burst == 0:
                flags = 0x80
            bhs[1] = flags
            struct.pack_into(">II", bhs, 16, itt, RESERVED_TAG)
            if last and with_status:
                self._seq(bhs)
                struct.pack_into(">I", bhs, 44, residual)
            else:
                _HDR.pack_into(bhs, 24, 0, s.exp_cmd_sn, s.max_cmd_sn)
            struct.pack_into(">II", bhs, 36, datasn, offset)
            out.extend(encode(bhs, view[offset : offset + chunk], header_digest=hd, data_digest=dd))
            datasn += 1
            offset += chunk
