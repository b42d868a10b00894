"""SCSI for the agents: pyscsi's command layer over our own device backends.

pyscsi 2.1's own backends do not fit (see LAB-NOTES): its iSCSI backend loses sense data and
its SG path swallows CHECK CONDITION. The backends here implement the interface pyscsi's
`SCSI` front end and command classes expect (`execute(cmd)`, `opcodes`, `devicetype`,
`close()`) and raise `CheckCondition` (a pyscsi `SCSICheckCondition`) with the sense, or
`DeviceLost` when the path to the array is gone. `RsoCommand` is the raw-CDB command class for
the vendor-unique opcodes C0h-FFh, which pyscsi's CDB builder refuses. The RSO layouts (CDB,
status block, parameter lists) are `firmware_model.rso_wire`'s, which ships with the agents.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Any

import pyscsi.pyscsi.scsi_enum_command as scsi_enum_command
from pyscsi.pyscsi.scsi import SCSI
from pyscsi.pyscsi.scsi_command import SCSICommand
from pyscsi.pyscsi.scsi_opcode import OpCode
from pyscsi.pyscsi.scsi_sense import SCSICheckCondition

from firmware_model.rso_wire import (
    RSO_STATUS_LEN,
    STATES,
    STATUS_BLOCK_LEN,
    UNKNOWN_AGE,
    ConfigureParams,
    HostEvent,
    RsoOpcode,
    RsoStatus,
    StatusBlock,
    cdb,
)

from ..iscsi.url import IscsiUrl

ARRAY_CONTROLLER_TYPE = 0x0C  # SCSI peripheral device type of LUN 0 (storage array controller)

# The vendor-unique RSO opcodes under their old names here (rso_wire defines them).
HEARTBEAT = RsoOpcode.HEARTBEAT
ACKNOWLEDGE = RsoOpcode.ACKNOWLEDGE
STATUS = RsoOpcode.STATUS
FORCE_FAILOVER = RsoOpcode.FORCE_FAILOVER
CONFIGURE = RsoOpcode.CONFIGURE
LOG_HOST_EVENT = RsoOpcode.LOG_HOST_EVENT


class DeviceLost(Exception):
    """The path to the array is gone (connection refused/dropped, device vanished, timeout)."""


class CheckCondition(SCSICheckCondition):
    """CHECK CONDITION with its sense (fixed or descriptor format)."""

    def __init__(self, sense: bytes, status: int = 0x02) -> None:
        self.sense = bytes(sense)
        self.status = status
        try:
            super().__init__(bytearray(self.sense.ljust(18, b"\0")))
        except Exception:  # pyscsi's decoder knows only some layouts; ours below always works
            self.data: dict[str, int] = {}
        if self.sense and self.sense[0] & 0x7F in (0x72, 0x73):
            self.sense_key, self.asc, self.ascq = self.sense[1] & 0x0F, self.sense[2], self.sense[3]
        elif len(self.sense) >= 14:
            self.sense_key, self.asc, self.ascq = self.sense[2] & 0x0F, self.sense[12], self.sense[13]
        else:
            self.sense_key, self.asc, self.ascq = 0, 0, 0

    def __str__(self) -> str:
        return f"CHECK CONDITION sense key {self.sense_key:X}h ASC/ASCQ {self.asc:02X}h/{self.ascq:02X}h"

    @property
    def sequence_error(self) -> bool:  # RSO not configured/enabled yet
        return (self.sense_key, self.asc, self.ascq) == (0x5, 0x2C, 0x00)

    @property
    def wrong_port(self) -> bool:
        return (self.sense_key, self.asc, self.ascq) == (0x5, 0x80, 0x01)

    @property
    def unit_attention(self) -> bool:
        return self.sense_key == 0x6


class StatusError(Exception):
    """BUSY, RESERVATION CONFLICT, TASK SET FULL and other non-GOOD, non-CHECK statuses."""


class _Device:
    """What pyscsi's SCSI front end and command classes expect of a device."""

    def __init__(self) -> None:
        self.opcodes = scsi_enum_command.spc
        self.devicetype: int | None = None

    def run(self, cdb: bytes, data_out: bytes, read_len: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, cmd: Any) -> None:
        """pyscsi calls this: run the CDB, put the data-in into the command, raise on sense."""
        out = bytes(cmd.dataout) if cmd.dataout else b""
        tries = 0
        while True:
            try:
                data = self.run(bytes(cmd.cdb), out, len(cmd.datain) if cmd.datain is not None else 0)
            except CheckCondition as cc:
                cmd.sense = cc.sense
                tries += 1
                if cc.unit_attention and tries < 8:  # power on, access state changed...: retry
                    continue
                raise
            except StatusError:
                tries += 1
                if tries < 8:
                    time.sleep(0.05)
                    continue
                raise
            cmd.datain = bytearray(data)
            return

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ iSCSI
class IscsiDevice(_Device):
    """One iSCSI session (the project's initiator) to LUN `lun` of a target."""

    def __init__(self, url: str, initiator_name: str, timeout: float = 5.0) -> None:
        super().__init__()
        from ..iscsi.initiator import Initiator, InitiatorConfig  # not needed on the SG_IO path

        self.url = IscsiUrl.parse(url, default_lun=0)
        isid = bytes((0x80,)) + os.urandom(3) + b"\0\x01"  # random-format ISID: one nexus per agent run
        cfg = InitiatorConfig(initiator_name=initiator_name, isid=isid)
        try:
            self.ini = Initiator(self.url.host, self.url.port, cfg, timeout=timeout)
            self.ini.login(self.url.target)
        except Exception as exc:
            raise DeviceLost(f"iSCSI login to {self.url.host}:{self.url.port} failed: {exc}") from exc

    def run(self, cdb: bytes, data_out: bytes, read_len: int) -> bytes:
        from ..iscsi.initiator import InitiatorError

        try:
            if data_out:
                r = self.ini.scsi(self.url.lun, cdb, data=data_out)
            else:
                r = self.ini.scsi(self.url.lun, cdb, read_len=read_len)
        except (OSError, InitiatorError, ValueError) as exc:
            raise DeviceLost(f"iSCSI session lost: {exc}") from exc
        if r.status == 0x02:
            raise CheckCondition(r.sense)
        if r.status != 0:
            raise StatusError(f"SCSI status 0x{r.status:02x}")
        return r.data

    def close(self) -> None:
        try:
            self.ini.sock.settimeout(1.0)
            self.ini.logout()
        except Exception:
            pass
        self.ini.close()


# ------------------------------------------------------------------ Linux SCSI generic (SG_IO)
SG_IO = 0x2285
SG_DXFER_NONE = -1
SG_DXFER_TO_DEV = -2
SG_DXFER_FROM_DEV = -3
DRIVER_SENSE = 0x08
SG_INFO_OK_MASK = 0x1


class SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr from <scsi/sg.h>."""

    _fields_ = [
        ("interface_id", ctypes.c_int),
        ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte),
        ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort),
        ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p),
        ("cmdp", ctypes.c_void_p),
        ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint),
        ("flags", ctypes.c_uint),
        ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p),
        ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte),
        ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte),
        ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort),
        ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint),
        ("info", ctypes.c_uint),
    ]


class SgDevice(_Device):
    """A Linux SCSI generic device (/dev/sgN) driven with the SG_IO ioctl."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.timeout_ms = int(timeout * 1000)
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as exc:
            raise DeviceLost(f"cannot open {path}: {exc.strerror}") from exc

    def run(self, cdb: bytes, data_out: bytes, read_len: int) -> bytes:
        hdr = SgIoHdr()
        cdb_buf = ctypes.create_string_buffer(cdb, len(cdb))
        sense = ctypes.create_string_buffer(252)
        if data_out:
            buf = ctypes.create_string_buffer(data_out, len(data_out))
            hdr.dxfer_direction, hdr.dxfer_len = SG_DXFER_TO_DEV, len(data_out)
        elif read_len:
            buf = ctypes.create_string_buffer(read_len)
            hdr.dxfer_direction, hdr.dxfer_len = SG_DXFER_FROM_DEV, read_len
        else:
            buf = ctypes.create_string_buffer(1)
            hdr.dxfer_direction, hdr.dxfer_len = SG_DXFER_NONE, 0
        hdr.interface_id = ord("S")
        hdr.cmd_len = len(cdb)
        hdr.mx_sb_len = len(sense)
        hdr.dxferp = ctypes.addressof(buf)
        hdr.cmdp = ctypes.addressof(cdb_buf)
        hdr.sbp = ctypes.addressof(sense)
        hdr.timeout = self.timeout_ms
        try:
            fcntl.ioctl(self.fd, SG_IO, hdr)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO, errno.EIO, errno.ETIMEDOUT, errno.EBADF):
                raise DeviceLost(f"{self.path}: {exc.strerror}") from exc
            raise
        if hdr.host_status:  # DID_NO_CONNECT, DID_TIME_OUT, DID_TRANSPORT_*...: the path is gone
            raise DeviceLost(f"{self.path}: host status 0x{hdr.host_status:02x}")
        if hdr.status == 0x02 or (hdr.driver_status & DRIVER_SENSE and hdr.sb_len_wr):
            raise CheckCondition(sense.raw[: hdr.sb_len_wr])
        if hdr.status:
            raise StatusError(f"SCSI status 0x{hdr.status:02x}")
        n = max(0, int(hdr.dxfer_len) - max(0, hdr.resid)) if hdr.dxfer_direction == SG_DXFER_FROM_DEV else 0
        return buf.raw[:n]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def find_array_controller(sysfs: Path = Path("/sys/class/scsi_generic")) -> str:
    """The /dev/sgN whose peripheral type is the array controller (LUN 0 of the array)."""
    for entry in sorted(sysfs.glob("sg*"), key=lambda p: int(p.name[2:] or 0)):
        try:
            if int((entry / "device" / "type").read_text().strip()) == ARRAY_CONTROLLER_TYPE:
                return f"/dev/{entry.name}"
        except (OSError, ValueError):
            continue
    raise DeviceLost("no SCSI generic device of type 0Ch (array controller) is present")


# ------------------------------------------------------------------ the vendor-unique commands
class RsoCommand(SCSICommand):
    """A raw 10-byte CDB for opcodes C0h-FFh (pyscsi's CDB builder only knows the standard groups)."""

    def __init__(self, opcode: int, name: str, *, alloc: int = 0, data_out: bytes = b"") -> None:
        # SCSICommand.__init__ would size the CDB from the opcode group and refuse C0h-FFh.
        self.opcode = OpCode(name, opcode, {})
        self.cdb = bytearray(cdb(opcode, len(data_out) if data_out else alloc))
        self.dataout = bytearray(data_out)
        self.datain = bytearray(alloc)
        self.result: dict[str, Any] = {}
        self.pagecode = None

    @classmethod
    def unmarshall_datain(cls, data: bytes | bytearray, **_: Any) -> dict[str, Any]:
        return StatusBlock.decode(bytes(data)).as_dict() if len(data) >= STATUS_BLOCK_LEN else {}


class RsoClient:
    """The RSO commands on LUN 0 of the array, through any device backend."""

    def __init__(self, device: Any, check_type: bool = True) -> None:
        self.device = device
        if check_type:
            scsi = SCSI(device)  # pyscsi's INQUIRY sets device.devicetype
            if device.devicetype != ARRAY_CONTROLLER_TYPE:
                device.close()
                raise ValueError(f"peripheral device type {device.devicetype:#04x}: the RSO commands go to "
                                 f"the array controller, LUN 0 (type 0x0c)")
            self.inquiry = scsi.inquiry().result

    def _in(self, opcode: int, name: str, alloc: int) -> bytes:
        cmd = RsoCommand(opcode, name, alloc=alloc)
        self.device.execute(cmd)
        if len(cmd.datain) < alloc:
            raise DeviceLost(f"{name}: short answer ({len(cmd.datain)} bytes)")
        return bytes(cmd.datain)

    def heartbeat(self) -> StatusBlock:
        return StatusBlock.from_bytes(self._in(HEARTBEAT, "RSO HEARTBEAT", STATUS_BLOCK_LEN))

    def acknowledge(self) -> StatusBlock:
        return StatusBlock.from_bytes(self._in(ACKNOWLEDGE, "RSO ACKNOWLEDGE", STATUS_BLOCK_LEN))

    def status(self) -> RsoStatus:
        return RsoStatus.from_bytes(self._in(STATUS, "RSO STATUS", RSO_STATUS_LEN))

    def force_failover(self) -> None:
        self.device.execute(RsoCommand(FORCE_FAILOVER, "RSO FORCE FAILOVER"))

    def configure(self, enable: bool, timeout_s: float | None, act_alone: bool = False) -> None:
        params = ConfigureParams.of(enable, timeout_s, act_alone).to_bytes()
        self.device.execute(RsoCommand(CONFIGURE, "RSO CONFIGURE", data_out=params))

    def log_event(self, code: str, message: str) -> None:
        payload = HostEvent(code, message).to_bytes()
        self.device.execute(RsoCommand(LOG_HOST_EVENT, "RSO LOG HOST EVENT", data_out=payload))

    def close(self) -> None:
        self.device.close()


__all__ = [
    "ACKNOWLEDGE",
    "ARRAY_CONTROLLER_TYPE",
    "CONFIGURE",
    "FORCE_FAILOVER",
    "HEARTBEAT",
    "LOG_HOST_EVENT",
    "STATES",
    "STATUS",
    "UNKNOWN_AGE",
    "CheckCondition",
    "DeviceLost",
    "IscsiDevice",
    "RsoClient",
    "RsoCommand",
    "RsoStatus",
    "SgDevice",
    "SgIoHdr",
    "StatusBlock",
    "StatusError",
    "find_array_controller",
]
