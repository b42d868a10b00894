"""A small blocking iSCSI initiator built on the project's own PDU code.

Used by the tests (to drive the target with exact PDUs, including wrong ones) and by
the host agents. One session, one connection, one command at a time unless the caller
pipelines raw PDUs itself.
"""

from __future__ import annotations

import itertools
import secrets
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from firmware_model.lun_address import encode_lun

from .chap import chap_response, decode_binary, encode_hex
from .constants import RESERVED_TAG, Op
from .pdu import Pdu, PduReader, encode, extended_cdb_ahs
from .text import encode_text, parse_text


class InitiatorError(Exception):
    pass


class LoginError(InitiatorError):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


@dataclass
class CommandResult:
    status: int
    data: bytes = b""
    sense: bytes = b""
    residual: int = 0
    overflow: bool = False
    underflow: bool = False
    response: int = 0

    @property
    def sense_key(self) -> int:
        if not self.sense:
            return 0
        if self.sense[0] & 0x7F in (0x72, 0x73):
            return self.sense[1] & 0x0F
        return self.sense[2] & 0x0F

    @property
    def asc_ascq(self) -> tuple[int, int]:
        if not self.sense:
            return (0, 0)
        if self.sense[0] & 0x7F in (0x72, 0x73):
            return (self.sense[2], self.sense[3])
        return (self.sense[12], self.sense[13])


@dataclass
class InitiatorConfig:
    initiator_name: str = "iqn.2026-11.org.msa500-emu:test"
    isid: bytes = b"\x80\x12\x34\x56\x00\x01"
    header_digest: str = "None"
    data_digest: str = "None"
    chap_user: str | None = None
    chap_secret: str | None = None
    mutual_secret: str | None = None  # expect the target to prove it knows this
    immediate_data: str = "Yes"
    initial_r2t: str = "No"
    max_recv_dsl: int = 262144
    first_burst: int = 65536
    max_burst: int = 262144
    extra_keys: list[tuple[str, str]] = field(default_factory=list)


class Initiator:
    def __init__(self, host: str = "127.0.0.1", port: int = 3260, config: InitiatorConfig | None = None,
                 timeout: float = 10.0, sock: Any = None):
        """Connects to host:port, or talks over `sock` (anything with sendall/recv/close)."""
        self.config = config or InitiatorConfig()
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.reader = PduReader()
        self.itt = itertools.count(1)
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.max_cmd_sn = 1
        self.hd = False
        self.dd = False
        self.tsih = 0
        self.cid = 0
        self.params: dict[str, str] = {}
        self.target_max_recv = 8192
        self.pings_answered = 0

    # -- raw I/O ---------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_pdu(self, bhs: bytearray, data: bytes = b"", ahs: bytes = b"") -> None:
        self.sock.sendall(b"".join(bytes(c) for c in encode(bhs, data, header_digest=self.hd,
                                                           data_digest=self.dd, ahs=ahs)))

    def recv_pdu(self, answer_pings: bool = True) -> Pdu:
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                if pdu.opcode == Op.NOP_IN and pdu.itt == RESERVED_TAG and answer_pings:
                    self._answer_ping(pdu)
                    continue
                if pdu.opcode not in (Op.R2T,) and pdu.u32(24) and pdu.opcode != Op.DATA_IN:
                    self.exp_stat_sn = (pdu.u32(24) + 1) & 0xFFFFFFFF
                if pdu.opcode != Op.LOGIN_RSP and pdu.opcode not in (Op.R2T,):
                    self.max_cmd_sn = pdu.u32(32)
                return pdu
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("target closed the connection")
            self.reader.feed(chunk)

    def _answer_ping(self, pdu: Pdu) -> None:
        bhs = bytearray(48)
        bhs[0] = Op.NOP_OUT | 0x40
        bhs[1] = 0x80
        bhs[8:16] = pdu.bhs[8:16]
        struct.pack_into(">IIII", bhs, 16, RESERVED_TAG, pdu.u32(20), self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(bhs)
        self.pings_answered += 1

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- login -----------------------------------------------------------------------
    def _login_pdu(self, csg: int, nsg: int, transit: bool, keys: list[tuple[str, str]]) -> Pdu:
        bhs = bytearray(48)
        bhs[0] = Op.LOGIN_REQ | 0x40
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        bhs[8:14] = self.config.isid
        struct.pack_into(">H", bhs, 14, self.tsih)
        struct.pack_into(">IHxxII", bhs, 16, 0x1000, self.cid, self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(bhs, encode_text(keys))
        rsp = self.recv_pdu()
        if rsp.opcode != Op.LOGIN_RSP:
            raise InitiatorError(f"expected a login response, got opcode 0x{rsp.opcode:02x}")
        self.exp_stat_sn = (rsp.u32(24) + 1) & 0xFFFFFFFF
        self.max_cmd_sn = rsp.u32(32)
        status = rsp.bhs[36] << 8 | rsp.bhs[37]
        if status:
            raise LoginError(status, f"login failed with status 0x{status:04x}")
        self.params.update((k, v) for k, v in parse_text(rsp.data)
                           if v not in ("Irrelevant", "NotUnderstood", "Reject"))
        return rsp

    def login(self, target: str | None, discovery: bool = False) -> dict[str, str]:
        cfg = self.config
        keys = [("InitiatorName", cfg.initiator_name),
                ("SessionType", "Discovery" if discovery else "Normal")]
        if target:
            keys.append(("TargetName", target))
        if cfg.chap_user:
            keys.append(("AuthMethod", "CHAP"))
            rsp = self._login_pdu(0, 1, False, keys)
            got = dict(parse_text(rsp.data))
            if got.get("AuthMethod") != "CHAP":
                raise InitiatorError(f"target answered AuthMethod={got.get('AuthMethod')}")
            rsp = self._login_pdu(0, 1, False, [("CHAP_A", "5")])
            got = dict(parse_text(rsp.data))
            ident = int(got["CHAP_I"])
            challenge = decode_binary(got["CHAP_C"])
            assert cfg.chap_secret is not None
            resp = chap_response(ident, cfg.chap_secret.encode(), challenge)
            answer = [("CHAP_N", cfg.chap_user), ("CHAP_R", encode_hex(resp))]
            my_id, my_chal = secrets.randbelow(256), secrets.token_bytes(16)
            if cfg.mutual_secret:
                answer += [("CHAP_I", str(my_id)), ("CHAP_C", encode_hex(my_chal))]
            rsp = self._login_pdu(0, 1, True, answer)
            got = dict(parse_text(rsp.data))
            if cfg.mutual_secret:
                want = chap_response(my_id, cfg.mutual_secret.encode(), my_chal)
                if decode_binary(got.get("CHAP_R", "0x")) != want:
                    raise InitiatorError("target failed mutual CHAP")
        else:
            keys.append(("AuthMethod", "None"))
            rsp = self._login_pdu(0, 1, True, keys)
        ops = [
            ("HeaderDigest", cfg.header_digest), ("DataDigest", cfg.data_digest),
            ("MaxRecvDataSegmentLength", str(cfg.max_recv_dsl)),
        ]
        if not discovery:
            ops += [("InitialR2T", cfg.initial_r2t), ("ImmediateData", cfg.immediate_data),
                    ("MaxBurstLength", str(cfg.max_burst)), ("FirstBurstLength", str(cfg.first_burst)),
                    ("MaxOutstandingR2T", "1"), ("ErrorRecoveryLevel", "0"), ("MaxConnections", "1")]
        ops += cfg.extra_keys
        rsp = self._login_pdu(1, 3, True, ops)
        self.tsih = struct.unpack_from(">H", rsp.bhs, 14)[0]
        self.hd = self.params.get("HeaderDigest") == "CRC32C"
        self.dd = self.params.get("DataDigest") == "CRC32C"
        self.reader.header_digest, self.reader.data_digest = self.hd, self.dd
        self.target_max_recv = int(self.params.get("MaxRecvDataSegmentLength", "8192"))
        return self.params

    # -- full feature phase ---------------------------------------------------------
    def _next_cmd_sn(self, immediate: bool) -> int:
        sn = self.cmd_sn
        if not immediate:
            self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return sn

    def scsi(self, lun: int, cdb: bytes, *, read_len: int = 0, data: bytes = b"",
             edtl: int | None = None) -> CommandResult:
        """Run one SCSI command to completion (handles R2T and Data-In)."""
        itt = next(self.itt)
        length = edtl if edtl is not None else (len(data) if data else read_len)
        bhs = bytearray(48)
        bhs[0] = Op.SCSI_CMD
        flags = 0x01  # simple task
        if data:
            flags |= 0x20
        elif length:
            flags |= 0x40
        ahs = b""
        if len(cdb) > 16:
            ahs = extended_cdb_ahs(cdb[16:])
        bhs[8:16] = encode_lun(lun)
        struct.pack_into(">IIII", bhs, 16, itt, length, self._next_cmd_sn(False), self.exp_stat_sn)
        bhs[32:48] = cdb[:16].ljust(16, b"\0")
        fb = int(self.params.get("FirstBurstLength", "65536"))
        immediate = b""
        if data and self.params.get("ImmediateData", "Yes") == "Yes":
            immediate = data[: min(fb, self.target_max_recv)]
        unsolicited_end = len(immediate)
        if data and self.params.get("InitialR2T", "Yes") == "No":
            unsolicited_end = min(fb, len(data))
        if unsolicited_end <= len(immediate):
            flags |= 0x80  # F: no unsolicited Data-Out follows
        bhs[1] = flags
        self.send_pdu(bhs, immediate, ahs)
        if unsolicited_end > len(immediate):
            self._send_data(itt, RESERVED_TAG, data, len(immediate), unsolicited_end - len(immediate))
        buf = bytearray()
        while True:
            pdu = self.recv_pdu()
            op = pdu.opcode
            if op == Op.R2T:
                ttt = pdu.u32(20)
                offset, want = struct.unpack_from(">II", pdu.bhs, 40)
                self._send_data(itt, ttt, data, offset, want)
            elif op == Op.DATA_IN:
                offset = pdu.u32(40)
                buf[offset : offset + len(pdu.data)] = pdu.data
                if pdu.flags & 0x01:
                    return CommandResult(pdu.bhs[3], bytes(buf), b"", pdu.u32(44),
                                         bool(pdu.flags & 0x04), bool(pdu.flags & 0x02))
            elif op == Op.SCSI_RSP:
                sense = b""
                if pdu.data:
                    n = struct.unpack_from(">H", pdu.data, 0)[0]
                    sense = bytes(pdu.data[2 : 2 + n])
                return CommandResult(pdu.bhs[3], bytes(buf), sense, pdu.u32(44),
                                     bool(pdu.flags & 0x04), bool(pdu.flags & 0x02), pdu.bhs[2])
            elif op == Op.REJECT:
                raise InitiatorError(f"target rejected the command (reason 0x{pdu.bhs[2]:02x})")
            else:
                raise InitiatorError(f"unexpected opcode 0x{op:02x}")

    def _send_data(self, itt: int, ttt: int, data: bytes, offset: int, length: int) -> None:
        seg = self.target_max_recv
        datasn = 0
        end = offset + length
        while offset < end:
            n = min(seg, end - offset)
            bhs = bytearray(48)
            bhs[0] = Op.DATA_OUT
            bhs[1] = 0x80 if offset + n >= end else 0
            struct.pack_into(">II", bhs, 16, itt, ttt)
            struct.pack_into(">I", bhs, 28, self.exp_stat_sn)
            struct.pack_into(">II", bhs, 36, datasn, offset)
            self.send_pdu(bhs, data[offset : offset + n])
            datasn += 1
            offset += n

    def read(self, lun: int, lba: int, blocks: int, block_size: int = 512) -> bytes:
        cdb = struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)
        r = self.scsi(lun, cdb, read_len=blocks * block_size)
        if r.status != 0:
            raise InitiatorError(f"READ(16) status 0x{r.status:02x} sense {r.sense.hex()}")
        return r.data

    def write(self, lun: int, lba: int, data: bytes, block_size: int = 512, fua: bool = False) -> None:
        cdb = struct.pack(">BBQIBB", 0x8A, 0x08 if fua else 0, lba, len(data) // block_size, 0, 0)
        r = self.scsi(lun, cdb, data=data)
        if r.status != 0:
            raise InitiatorError(f"WRITE(16) status 0x{r.status:02x} sense {r.sense.hex()}")

    def test_unit_ready(self, lun: int) -> CommandResult:
        return self.scsi(lun, bytes(6))

    def clear_unit_attentions(self, lun: int, tries: int = 10) -> CommandResult:
        """TEST UNIT READY until no UNIT ATTENTION is left (as libiscsi does on connect)."""
        r = self.test_unit_ready(lun)
        for _ in range(tries):
            if r.status != 2 or r.sense_key != 0x06:
                break
            r = self.test_unit_ready(lun)
        return r

    def nop(self, payload: bytes = b"") -> Pdu:
        bhs = bytearray(48)
        bhs[0] = Op.NOP_OUT | 0x40
        bhs[1] = 0x80
        itt = next(self.itt)
        struct.pack_into(">IIII", bhs, 16, itt, RESERVED_TAG, self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(bhs, payload)
        return self.recv_pdu()

    def text(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        bhs = bytearray(48)
        bhs[0] = Op.TEXT_REQ | 0x40
        bhs[1] = 0x80
        struct.pack_into(">IIII", bhs, 16, next(self.itt), RESERVED_TAG, self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(bhs, encode_text(keys))
        rsp = self.recv_pdu()
        if rsp.opcode != Op.TEXT_RSP:
            raise InitiatorError(f"expected text response, got 0x{rsp.opcode:02x}")
        return parse_text(rsp.data)

    def task_mgmt(self, function: int, lun: int = 0, rtt: int = RESERVED_TAG, ref_cmd_sn: int = 0) -> int:
        bhs = bytearray(48)
        bhs[0] = Op.TASK_MGMT_REQ | 0x40
        bhs[1] = 0x80 | function
        bhs[8:16] = encode_lun(lun)
        struct.pack_into(">IIII", bhs, 16, next(self.itt), rtt, self.cmd_sn, self.exp_stat_sn)
        struct.pack_into(">I", bhs, 32, ref_cmd_sn)
        self.send_pdu(bhs)
        rsp = self.recv_pdu()
        if rsp.opcode != Op.TASK_MGMT_RSP:
            raise InitiatorError(f"expected TMF response, got 0x{rsp.opcode:02x}")
        return rsp.bhs[2]

    def logout(self) -> int:
        bhs = bytearray(48)
        bhs[0] = Op.LOGOUT_REQ | 0x40
        bhs[1] = 0x80
        struct.pack_into(">IIII", bhs, 16, next(self.itt), 0, self.cmd_sn, self.exp_stat_sn)
        self.send_pdu(bhs)
        rsp = self.recv_pdu()
        self.close()
        return rsp.bhs[2]


lun_field = encode_lun  # the 8-byte LUN field, under the name callers of this module know
