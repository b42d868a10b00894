"""The CDB path: ScsiTarget.execute with arbitrary CDBs and data-out on every LUN of a small
in-process Controller (RAID 1 and RAID 5 logical drives, sparse 64 MiB drives, virtual clock),
built in a temporary directory and rebuilt every RESET_EVERY inputs. Any result is an answer (CHECK CONDITION
included); an exception out of execute is a crash."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from firmware_model.controller import Controller
from firmware_model.scsi.types import Nexus, ScsiRequest
from tests.unit.shelf_helpers import Clocked

MAX_LEN = 65600  # the longest input libFuzzer tries (scripts/fuzz -max_len)

NEXUSES = (Nexus("iqn.2026-01.fuzz:host-a,i,0x000001", 1), Nexus("iqn.2026-01.fuzz:host-b,i,0x000002", 2))
LUNS = (0, 1, 2, 3)  # the array controller device, two logical drives, and a LUN nobody mapped
CDB_LENGTHS = (6, 10, 12, 16, 32)
MAX_DATA = 64 * 1024
MAX_COMMANDS = 8
RESET_EVERY = 5000  # a fresh shelf now and then: a stopped unit or a stray reservation does not stick
_SHELF: list[tuple[Clocked, Controller, Path]] = []
_COUNT = [0]


def _drop() -> None:
    while _SHELF:
        _, ctl, where = _SHELF.pop()
        if not ctl.closed:
            ctl.close()
        shutil.rmtree(where, True)


atexit.register(_drop)


def controller() -> tuple[Clocked, Controller]:
    if _SHELF and _COUNT[0] % RESET_EVERY == 0:
        _drop()
    _COUNT[0] += 1
    if not _SHELF:
        where = Path(tempfile.mkdtemp(prefix="msa500-fuzz-cdb-"))
        clocked = Clocked()
        _SHELF.append((clocked, clocked.open(where), where))
    clocked, ctl, _ = _SHELF[0]
    return clocked, ctl


def requests(data: bytes) -> list[ScsiRequest]:
    """Input layout: up to MAX_COMMANDS records of [nexus/LUN byte][CDB length byte][CDB]
    [data-out length, 2 bytes][data-out]; a short tail is dropped."""
    out: list[ScsiRequest] = []
    pos = 0
    while len(out) < MAX_COMMANDS and pos + 2 <= len(data):
        head, kind = data[pos], data[pos + 1]
        n = CDB_LENGTHS[(kind & 7) % len(CDB_LENGTHS)]
        cdb = data[pos + 2 : pos + 2 + n]
        dlen = min(int.from_bytes(data[pos + 2 + n : pos + 4 + n], "big"), MAX_DATA)
        payload = data[pos + 4 + n : pos + 4 + n + dlen]
        pos += 4 + n + dlen
        if len(cdb) < 1:
            break
        expected = len(payload) if kind & 0x80 else len(payload) + (kind >> 3 & 0xF) * 512
        out.append(ScsiRequest(NEXUSES[head >> 7], LUNS[head & 3], bytes(cdb), payload, expected))
    return out


def TestOneInput(data: bytes) -> None:
    clocked, ctl = controller()
    for req in requests(data):
        res = ctl.target.execute(req)
        assert isinstance(res.data, (bytes, bytearray, memoryview)) and isinstance(res.sense, (bytes, bytearray))
    clocked.clock.advance(0.5)
    if (deadline := ctl.next_deadline()) is not None and deadline <= clocked.clock.now():
        ctl.advance(clocked.clock.now())
