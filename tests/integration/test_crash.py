"""Crash consistency: every acknowledged write survives SIGKILL of the emulator.

A writer sends random writes through iSCSI; each 512-byte block carries its LBA, a
sequence number and a checksum, and the writer records each write the moment its SCSI
status arrives. The emulator is killed with SIGKILL at a random moment; after restart
every acknowledged write reads back (the newest version of each block, or the one write
that was in flight), and no block holds data that was never written.
"""

from __future__ import annotations

import random
import signal
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

from ..conftest import RunningArray, start_array

pytestmark = pytest.mark.slow

BS = 512
REGION = 8192  # blocks written (4 MiB)
MAGIC = 0x4D534135

SHELVES = {
    "raid5": ('[shelf]\nserial = "CRASH00005"\ndrive_size = "256MiB"\n[[shelf.arrays]]\nname = "A"\n'
              'bays = [1, 2, 3, 4]\n[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "5"\n'
              'size = "64MiB"\nstripe_kib = 16\n'),
    "raid1": ('[shelf]\nserial = "CRASH00001"\ndrive_size = "256MiB"\n[[shelf.arrays]]\nname = "A"\n'
              'bays = [1, 2]\n[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "1"\nsize = "64MiB"\n'),
}


def block(lba: int, seq: int) -> bytes:
    head = struct.pack(">IIQ", MAGIC, lba, seq)
    body = (head + random.Random(seq * 7919 + lba).randbytes(BS - len(head) - 4))
    return body + struct.pack(">I", zlib.crc32(body))


def parse(lba: int, data: bytes) -> int | None:
    """The sequence number a block holds; None for never written; raises on garbage."""
    if data == bytes(BS):
        return None
    magic, got_lba, seq = struct.unpack_from(">IIQ", data)
    assert magic == MAGIC and got_lba == lba, f"block {lba} holds foreign data"
    assert zlib.crc32(data[:-4]) == struct.unpack_from(">I", data, BS - 4)[0], f"block {lba} torn"
    return seq


class Writer:
    def __init__(self, arr: RunningArray, seed: int, seq0: int) -> None:
        self.acked: dict[int, int] = {}
        self.inflight: dict[int, int] = {}
        self.rnd = random.Random(seed)
        self.seq = seq0
        self.ini = Initiator("127.0.0.1", arr.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:crash"))
        self.ini.login(arr.target)
        self.ini.clear_unit_attentions(1)
        self.count = 0

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                n = self.rnd.randint(1, 24)
                lba = self.rnd.randrange(0, REGION - n)
                self.seq += 1
                self.inflight = {lba + i: self.seq for i in range(n)}
                data = b"".join(block(lba + i, self.seq) for i in range(n))
                fua = self.rnd.random() < 0.05
                self.ini.write(1, lba, data, fua=fua)
                self.acked.update(self.inflight)  # the SCSI status arrived: acknowledged
                self.inflight = {}
                self.count += 1
        except (OSError, ConnectionError):
            pass  # the emulator died under us


def verify(arr: RunningArray, acked: dict[int, int], inflight: dict[int, int]) -> None:
    ini = Initiator("127.0.0.1", arr.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:verify"))
    ini.login(arr.target)
    assert ini.clear_unit_attentions(1).status == 0
    data = b"".join(ini.read(1, off, 1024) for off in range(0, REGION, 1024))
    ini.logout()
    for lba in range(REGION):
        seq = parse(lba, data[lba * BS : (lba + 1) * BS])
        want = acked.get(lba)
        if want is None:
            assert seq is None or seq == inflight.get(lba), f"block {lba} holds a write never sent"
        else:
            assert seq is not None and (seq == want or seq == inflight.get(lba)), (
                f"block {lba}: acknowledged seq {want} lost (found {seq})")


def ctl(arr: RunningArray, *words: str) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, *words],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr


def verify_and_settle(arr: RunningArray, acked: dict[int, int], inflight: dict[int, int]) -> None:
    """Check every acknowledged write; then record whether the in-flight one landed."""
    verify(arr, acked, inflight)
    ini = Initiator("127.0.0.1", arr.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:settle"))
    ini.login(arr.target)
    ini.clear_unit_attentions(1)
    for lba in inflight:
        got = parse(lba, ini.read(1, lba, 1))
        if got is not None:
            acked[lba] = got
    ini.logout()


@pytest.mark.parametrize("shelf", sorted(SHELVES))
@pytest.mark.parametrize("cache", ["write-back", "write-through"])
def test_sigkill_loses_no_acknowledged_write(tmp_path: Path, shelf: str, cache: str) -> None:
    cfg = tmp_path / "shelf.toml"
    cfg.write_text(SHELVES[shelf])
    rnd = random.Random(f"{shelf}-{cache}")
    acked: dict[int, int] = {}
    inflight: dict[int, int] = {}
    seq = 0
    arr = start_array(tmp_path / "state", cfg)
    try:
        for _ in range(5):  # x 4 combinations = 20 kill points
            verify_and_settle(arr, acked, inflight)
            if cache == "write-through":
                ctl(arr, "SET", "CACHE", "DISABLE")
            w = Writer(arr, rnd.randrange(1 << 30), seq)
            w.acked = acked
            stop = threading.Event()
            t = threading.Thread(target=w.run, args=(stop,))
            t.start()
            time.sleep(rnd.uniform(0.2, 0.8))
            arr.proc.send_signal(signal.SIGKILL)  # the crash, at a random moment
            arr.proc.wait()
            stop.set()
            t.join(30)
            w.ini.close()
            assert w.count > 0
            acked, inflight, seq = w.acked, w.inflight, w.seq
            arr = start_array(tmp_path / "state", cfg)
        verify_and_settle(arr, acked, inflight)
    finally:
        arr.stop()
