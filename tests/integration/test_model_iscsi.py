"""The reference-model checker, thinner, over iSCSI: a real emulator process, real sessions, SIGKILL.

The same model as tests/model (reference.py: each block's acceptable contents, written by
blocks that name their LUN, LBA and write) checks every read of a random sequence of writes
(FUA or not, random sizes across stripe boundaries), reads, drive failures and replacements,
spare rebuilds, cache enable/disable, and SIGKILL restarts of the emulator, some of them while
a large write is on the wire (that write is then unacknowledged: old or new data per block).
Faults stay within what the level tolerates (one drive at a time, the next only once the
array is whole again), so every block must read back with GOOD status: no block may error.
"""

from __future__ import annotations

import random
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import CommandResult, Initiator, InitiatorConfig
from tests.model import reference as refm
from tests.model.reference import BLOCK, Reference

from ..conftest import RunningArray, start_array

pytestmark = pytest.mark.slow

LUN = 1
BLOCKS = 16384  # 8 MiB
SHELVES = {
    "raid5": ('[shelf]\nserial = "MODELISCSI"\ndrive_size = "64MiB"\n[[shelf.arrays]]\nname = "A"\n'
              'bays = [1, 2, 3, 4]\nspares = [5]\n[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "5"\n'
              'size = "8MiB"\nstripe_kib = 16\n[shelf.cache]\nsize_mb = 128\nholdup_s = 30\ncharge_s = 2\n'
              'spinup_s = 0\n'),
    "adg": ('[shelf]\nserial = "MODELISCSJ"\ndrive_size = "64MiB"\n[[shelf.arrays]]\nname = "A"\n'
            'bays = [1, 2, 3, 4, 5]\n[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "adg"\n'
            'size = "8MiB"\nstripe_kib = 64\n[shelf.cache]\nsize_mb = 128\nholdup_s = 30\ncharge_s = 2\n'
            'spinup_s = 0\n'),
}


class Checker:
    """One emulator, one session, the reference model; every read checked block by block."""

    def __init__(self, tmp: Path, shelf: str, seed: int) -> None:
        self.tmp = tmp
        self.cfg = tmp / "shelf.toml"
        self.cfg.write_text(SHELVES[shelf])
        self.rng = random.Random(seed)
        self.model = Reference()
        self.model.add_ld(LUN, BLOCKS)
        self.token = 0
        self.log: list[str] = []
        self.arr: RunningArray = start_array(tmp / "state", self.cfg)
        self.ini = self._login()
        self.write_back = True

    def _login(self) -> Initiator:
        ini = Initiator("127.0.0.1", self.arr.port1, InitiatorConfig(initiator_name="iqn.2026-12.test:model"))
        ini.login(self.arr.target)
        ini.clear_unit_attentions(LUN)
        return ini

    def note(self, text: str) -> None:
        self.log.append(text)

    def fail(self, what: str) -> None:
        raise AssertionError(what + "\n-- steps:\n" + "\n".join(self.log[-30:]))

    def scsi(self, cdb: bytes, *, read_len: int = 0, data: bytes = b"") -> CommandResult:
        for _ in range(8):
            r = self.ini.scsi(LUN, cdb, read_len=read_len, data=data)
            deferred = r.sense[:1] and r.sense[0] & 0x7F in (0x71, 0x73)
            if r.status == 2 and (r.sense_key == 0x06 or deferred):
                continue
            return r
        self.fail("unit attentions never stop")
        raise AssertionError

    def write(self, lba: int, n: int, fua: bool) -> None:
        self.token += 1
        t = self.token
        self.model.origin[t] = f"WRITE LBA {lba}+{n}{' FUA' if fua else ''}"
        self.note(self.model.origin[t])
        data = refm.blocks(LUN, lba, n, t)
        r = self.scsi(struct.pack(">BBQIBB", 0x8A, 0x08 if fua else 0, lba, n, 0, 0), data=data)
        if r.status != 0:
            self.fail(f"WRITE LBA {lba}+{n} answered status {r.status:#x} sense {r.sense.hex()}: no block may error")
        self.model.acked(LUN, lba, n, t, durable=fua or not self.write_back)

    def check(self, lba: int, n: int) -> None:
        r = self.scsi(struct.pack(">BBQIBB", 0x88, 0, lba, n, 0, 0), read_len=n * BLOCK)
        if r.status != 0:
            self.fail(f"READ LBA {lba}+{n} answered status {r.status:#x} sense {r.sense.hex()}: no block may error")
        for i in range(n):
            bad = self.model.check_block(LUN, lba + i, r.data[i * BLOCK : (i + 1) * BLOCK])
            if bad:
                self.fail(bad)

    def sweep(self) -> None:
        self.note("sweep")
        for lba in range(0, BLOCKS, 1024):
            self.check(lba, 1024)

    def random_io(self) -> None:
        n = self.rng.choice([1, 7, 8, 9, 32, 33, 96, 128, 255, 512])
        lba = self.rng.randrange(BLOCKS - n)
        if self.rng.random() < 0.3:
            lba = max(0, self.rng.randrange(BLOCKS // 32) * 32 - self.rng.randrange(8))
            n = min(n, BLOCKS - lba)
        if self.rng.random() < 0.75:
            self.write(lba, n, fua=self.rng.random() < 0.15)
        self.check(max(0, lba - 8), min(n + 16, BLOCKS - max(0, lba - 8)))

    def ctl(self, *words: str) -> None:
        self.note(" ".join(words))
        self.arr.ctl(*words)

    def unit_state(self) -> str:
        return str(self.arr.unit(LUN)["state"])

    def wait_ok(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while self.unit_state() != "ok":
            if time.monotonic() > end:
                self.fail(f"LUN {LUN} not back to ok: {self.arr.unit(LUN)}")
            self.random_io()  # host I/O while it rebuilds
        self.note("unit ok")

    def restart(self, during_write: bool) -> None:
        """SIGKILL (with a large write on the wire, or between commands) and start again."""
        inflight: tuple[int, int, int] | None = None
        if during_write:
            n = 2048
            lba = self.rng.randrange(BLOCKS - n)
            self.token += 1
            t = self.token
            self.model.origin[t] = f"WRITE LBA {lba}+{n} cut by SIGKILL"
            data = refm.blocks(LUN, lba, n, t)
            inflight = (lba, n, t)
            done: list[int] = []

            def send() -> None:
                try:
                    r = self.ini.scsi(LUN, struct.pack(">BBQIBB", 0x8A, 0, lba, n, 0, 0), data=data)
                    done.append(r.status)
                except (OSError, ConnectionError):
                    pass

            th = threading.Thread(target=send)
            th.start()
            time.sleep(self.rng.uniform(0.0, 0.05))
        self.note(f"SIGKILL{' during a write' if during_write else ''}")
        self.arr.kill()
        if inflight is not None:
            th.join(30)
            lba, n, t = inflight
            if done == [0]:
                self.model.acked(LUN, lba, n, t, durable=not self.write_back)
            else:
                self.model.unacked(LUN, lba, n, t)
        self.ini.close()
        self.arr = start_array(self.tmp / "state", self.cfg)
        self.ini = self._login()

    def close(self) -> None:
        self.ini.close()
        assert self.arr.stop() == 0, self.arr.log_tail()


@pytest.mark.parametrize("shelf", sorted(SHELVES))
def test_model_over_iscsi_with_faults_and_sigkill(tmp_path: Path, shelf: str) -> None:
    chk = Checker(tmp_path, shelf, seed=zlib.crc32(shelf.encode()) & 0xFFFF)  # the same sequence every run
    rng = chk.rng
    members = [1, 2, 3, 4] if shelf == "raid5" else [1, 2, 3, 4, 5]
    try:
        for _ in range(60):
            chk.random_io()
        for round_ in range(8):
            for _ in range(rng.randrange(5, 25)):
                chk.random_io()
            what = rng.choice(["fail", "pull", "cache", "kill", "kill-write", "kill-write"])
            if round_ == 0:
                what = "kill-write"
            if what in ("fail", "pull"):
                bay = rng.choice(members)
                chk.ctl("FAULT", f"DISK{bay}", what.upper())
                for _ in range(10):
                    chk.random_io()  # degraded (or rebuilding onto the spare)
                if rng.random() < 0.5:
                    chk.restart(during_write=rng.random() < 0.5)
                # a pulled drive's bay is "missing" while its slot waits, "empty" once a spare took it
                if chk.arr.disk(bay)["state"] in ("failed", "missing", "empty"):
                    chk.ctl("FAULT", f"DISK{bay}", "INSERT")  # a new drive (failed) or the same one (pulled)
                if rng.random() < 0.5:
                    chk.restart(during_write=True)  # in the middle of the rebuild or copy-back
                chk.wait_ok()
            elif what == "cache":
                chk.write_back = not chk.write_back
                chk.ctl("SET", "CACHE", "ENABLE" if chk.write_back else "DISABLE")
            else:
                chk.restart(during_write=what == "kill-write")
            chk.sweep()
        chk.wait_ok()
        chk.sweep()
    finally:
        chk.close()
