"""iSCSI sessions of the test handle: log in to a controller port, list LUNs, keep a role's session."""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence

from firmware_model.lun_address import NO_LUN, decode_lun

from ..iscsi.initiator import CommandResult, Initiator, InitiatorConfig, InitiatorError

LOOPBACK = "127.0.0.1"
INITIATOR_PREFIX = "iqn.2026-11.org.msa500-emu.testing"
UA_RETRIES = 5  # a UNIT ATTENTION (power on, reset, access change) is not the answer: ask again


def _unit_attention(r: CommandResult) -> bool:
    return r.status == 2 and r.sense_key == 0x06


def report_luns(ini: Initiator) -> list[int]:
    """LUN 0 and the LUNs REPORT LUNS lists (flat or peripheral addressing)."""
    cdb = struct.pack(">BBBxxxIxx", 0xA0, 0, 0, 4096)
    r = ini.scsi(0, cdb, read_len=4096)
    for _ in range(UA_RETRIES):
        if not _unit_attention(r):
            break
        r = ini.scsi(0, cdb, read_len=4096)
    luns = [0]
    if r.status == 0 and len(r.data) >= 8:
        n = struct.unpack_from(">I", r.data)[0] // 8
        for i in range(min(n, (len(r.data) - 8) // 8)):
            entry = r.data[8 + 8 * i : 16 + 8 * i]
            lun = decode_lun(entry)
            if lun != NO_LUN and lun not in luns:
                luns.append(lun)
    return luns


def login(host: str, tcp_port: int, target: str, name: str, clear: Sequence[int] | None = (0,),
          config: InitiatorConfig | None = None) -> Initiator:
    """A logged-in session; the unit attentions of the new nexus consumed on the `clear` LUNs
    (None: every LUN REPORT LUNS lists)."""
    cfg = config or InitiatorConfig(initiator_name=name)
    ini = Initiator(host, tcp_port, cfg)
    try:
        ini.login(target)
        for lun in report_luns(ini) if clear is None else clear:
            ini.clear_unit_attentions(lun)
    except BaseException:
        ini.close()
        raise
    return ini


class RoleSession:
    """One iSCSI session kept open for a role (primary on port 1, recovery on port 2).

    Thread-safe (a background heartbeat may share it); a dropped connection is logged in again
    once before the command fails. `connect(lun)` opens the session, clearing that LUN's unit
    attentions.
    """

    def __init__(self, connect: Callable[[Sequence[int]], Initiator], port: int, name: str) -> None:
        self.connect = connect
        self.port = port
        self.name = name
        self.lock = threading.Lock()
        self.ini: Initiator | None = None

    def scsi(self, lun: int, cdb: bytes, *, read_len: int = 0, data: bytes = b"") -> CommandResult:
        with self.lock:
            for attempt in range(2):
                try:
                    if self.ini is None:
                        self.ini = self.connect((lun,))
                    r = self.ini.scsi(lun, cdb, read_len=read_len, data=data)
                    for _ in range(UA_RETRIES):
                        if not _unit_attention(r):
                            break
                        r = self.ini.scsi(lun, cdb, read_len=read_len, data=data)
                    return r
                except (OSError, InitiatorError):
                    self.close()
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def close(self, logout: bool = False) -> None:
        ini, self.ini = self.ini, None
        if ini is None:
            return
        if logout:
            try:
                ini.logout()
                return
            except (OSError, InitiatorError):
                pass
        ini.close()
