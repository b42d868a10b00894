"""Helpers for controller tests: small sparse shelves on a virtual clock, SCSI I/O, the clock loop."""

from __future__ import annotations

import contextlib
import os
import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from firmware_model.clock import VirtualClock
from firmware_model.controller import ArraySpec, Controller, LogicalDriveSpec, ShelfSpec
from firmware_model.enclosure import Drive
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status

MIB = 1 << 20
DRIVE = 64 * MIB
HOST = Nexus("iqn.2026-01.test:host,i,0x000001", 1)


def small_spec(
    arrays: list[ArraySpec] | None = None,
    lds: list[LogicalDriveSpec] | None = None,
    empty: tuple[int, ...] = (),
) -> ShelfSpec:
    """14 bays of 64 MiB drives; by default RAID 1 array A (1-2), RAID 5 array B (3-6), spare 7."""
    if arrays is None:
        arrays = [ArraySpec("A", [1, 2], [7]), ArraySpec("B", [3, 4, 5, 6], [7])]
        lds = [LogicalDriveSpec(1, "A", "1", 8 * MIB, "boot"),
               LogicalDriveSpec(2, "B", "5", 24 * MIB, "data", 16)]
    return ShelfSpec(serial="TESTSHELF1", drive_bytes=[0 if b in empty else DRIVE for b in range(1, 15)],
                     arrays=arrays, logical_drives=lds or [])


class Clocked:
    def __init__(self) -> None:
        self.clock = VirtualClock(100.0)
        self.walls = 1_700_000_000.0

    def wall(self) -> float:
        return self.walls

    def open(self, path: Path, spec: ShelfSpec | None = None) -> Controller:
        c = Controller(path, spec if spec is not None else small_spec(), self.clock, wall=self.wall)
        OPENED.append(c)
        return c


# Controllers tests opened: a test that "kills" one (opens the state directory again without
# closing it) leaves its drive images, cache and journals open; release_opened() lets them go after
# the test, without the close()'s NVRAM save and flush (the test is over: nothing may change now).
OPENED: list[Controller] = []


def release_opened() -> None:
    while OPENED:
        c = OPENED.pop()
        if c.closed:
            continue
        for part in (c.cache, c.intents, c.member_journal, c.enclosure):
            with contextlib.suppress(Exception):
                part.close()


def run_idle(c: Controller, clock: VirtualClock, limit: int = 10000) -> int:
    """Advance the clock deadline by deadline until no background work is left."""
    n = 0
    while (d := c.next_deadline()) is not None:
        if d > clock.now():
            clock.advance(d - clock.now())
        c.advance(clock.now())
        n += 1
        assert n < limit, "background work never finished"
    return n


def execute(c: Controller, lun: int, cdb: bytes, data: bytes = b"") -> ScsiResult:
    """One command; unit attentions (power on, LUN changes) are taken and retried."""
    for _ in range(8):
        res = c.target.execute(ScsiRequest(HOST, lun, cdb, data, len(data)))
        if res.status == Status.CHECK_CONDITION and sense(res)[0] == 0x6:
            continue
        return res
    raise AssertionError("unit attentions never stop")


def sense(res: ScsiResult) -> tuple[int, int, int]:
    s = res.sense
    if s[0] & 0x7F == 0x72:
        return s[1] & 0xF, s[2], s[3]
    return s[2] & 0xF, s[12], s[13]


def info(res: ScsiResult) -> int:
    return struct.unpack(">I", res.sense[3:7])[0]


def write(c: Controller, lun: int, lba: int, data: bytes) -> ScsiResult:
    cdb = struct.pack(">BBIBHB", 0x2A, 0, lba, 0, len(data) // 512, 0)
    return execute(c, lun, cdb, data)


def read(c: Controller, lun: int, lba: int, blocks: int) -> ScsiResult:
    cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)
    return execute(c, lun, cdb)


def tur(c: Controller, lun: int) -> ScsiResult:
    return execute(c, lun, bytes(6))


def pattern(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def fill(c: Controller, lun: int, seed: int, step: int = 256) -> bytes:
    """Write the whole logical drive with a seeded pattern (in `step`-block writes)."""
    blocks = next(u["blocks"] for u in c.units() if u["lun"] == lun)
    data = pattern(seed, blocks * 512)
    for lba in range(0, blocks, step):
        n = min(step, blocks - lba)
        res = write(c, lun, lba, data[lba * 512 : (lba + n) * 512])
        assert res.status == Status.GOOD, sense(res)
    return data


def read_all(c: Controller, lun: int, step: int = 1024) -> bytes:
    blocks = next(u["blocks"] for u in c.units() if u["lun"] == lun)
    out = bytearray()
    for lba in range(0, blocks, step):
        res = read(c, lun, lba, min(step, blocks - lba))
        assert res.status == Status.GOOD, sense(res)
        out += res.data
    return bytes(out)


def unit(c: Controller, lun: int) -> dict:
    return next(u for u in c.units() if u["lun"] == lun)


def disk(c: Controller, bay: int) -> dict:
    return c.disks()[bay - 1]


def codes(c: Controller) -> list[str]:
    return [str(e["code"]) for e in c.events()]


class KillNow(BaseException):
    """kill -9 at this member write: a BaseException, which nothing in the firmware catches."""


@contextmanager
def dies_at_member_write(n: int, torn: int = 0) -> Iterator[None]:
    """Member writes after the first `n` (firmware_model.enclosure.Drive.write) kill the process;
    the first `torn` blocks of the fatal one land first."""
    real = Drive.write
    count = [0]

    def write_or_die(self: Drive, offset: int, data: bytes | bytearray | memoryview) -> None:
        if count[0] >= n:
            if torn:
                real(self, offset, memoryview(data).cast("B")[: torn * 512])
            raise KillNow
        count[0] += 1
        real(self, offset, data)

    Drive.write = write_or_die  # type: ignore[method-assign]
    try:
        yield
    finally:
        Drive.write = real  # type: ignore[method-assign]


def abandon(c: Controller) -> None:
    """What kill -9 leaves: descriptors closed and the cache unmapped; nothing written or flushed."""
    for d in [*c.enclosure.bays.values(), *c.enclosure.aside.values()]:
        if d is not None and d.fd is not None:
            os.close(d.fd)
            d.fd = None
    c.cache._unmap()
    c.intents.close()
    c.member_journal.close()
    c.closed = True
