"""The hypothesis state machines of the checker: one per RAID level, the same rules for all.

Each example builds a shelf (members, stripe size, one or two logical drives, cache on or off
drawn by `setup`), runs a random sequence of the rules below against it, checks a sample of
blocks after every step, every block every SWEEP_EVERY steps and at the end (see driver.py
for what is checked). Rules that can be cut short by a kill take `kill`: None (most of the
time) or the number of member writes after which the emulator dies.

Weights: hypothesis picks among the enabled rules uniformly (with swarm testing: each example
switches a random subset of rules off), so a rule's weight is how many rules do that job:
writes 4 (random, across stripe boundaries, FUA, 16-byte/WRITE SAME), reads 1, and every fault
and management rule 1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware_model import drive_io
from firmware_model.cache import write_cache
from firmware_model.raid import fast_read

from .driver import Config, Driver, Violation

SWEEP_EVERY = 12
# Rules to leave out (comma separated names, e.g. MODEL_DISABLE=expand,extend while a known bug
# there is being fixed, so that the checker hunts for others).
DISABLED = frozenset(x.strip() for x in os.environ.get("MODEL_DISABLE", "").split(",") if x.strip())
MEMBERS: dict[str, tuple[int, ...]] = {"0": (2, 3), "1": (2,), "10": (4,), "5": (3, 4), "ADG": (4, 5)}
SIZES = st.sampled_from([1, 2, 7, 8, 9, 16, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512,
                         513, 1024, 2048])
LBAS = st.integers(0, 1 << 20)
KILL = st.one_of(st.none(), st.none(), st.none(), st.integers(0, 40))
IDX = st.integers(0, 15)
# State directories: tmpfs when there is one (NVRAM saves are fsync-free renames there; a
# kill leaves the same page-cache contents as on a disk file system).
TMP = os.environ.get("MODEL_TMP") or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else None)


class DataPathMachine(RuleBasedStateMachine):
    LEVEL: ClassVar[str] = "5"
    sequences: ClassVar[dict[str, int]] = {}
    steps_run: ClassVar[dict[str, int]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.d: Driver | None = None
        self.tmp: Path | None = None
        self.n = 0
        self.broken = False

    @property
    def drv(self) -> Driver:
        assert self.d is not None
        return self.d

    @initialize(members=st.integers(0, 1), stripe=st.sampled_from([16, 64, 256]), cache=st.booleans(),
                two=st.booleans(), seed=st.integers(0, 1 << 30), fast=st.booleans())
    def setup(self, members: int, stripe: int, cache: bool, two: bool, seed: int, fast: bool) -> None:
        # fast: every read of 1 KiB or more takes the large-read fast path (raid/fast_read.py) through
        # the drive-I/O threads, mirrored pieces split between copies at 4 KiB
        self._fast = mock.patch.multiple(fast_read, FAST_MIN=1024 if fast else fast_read.FAST_MIN,
                                         SPLIT_MIN=8192 if fast else fast_read.SPLIT_MIN,
                                         SPLIT_ALIGN=4096 if fast else fast_read.SPLIT_ALIGN)
        self._fast.start()
        self._io = mock.patch.object(drive_io, "PARALLEL_MIN", 2048 if fast else drive_io.PARALLEL_MIN)
        self._io.start()
        # and writes of 64 KiB or more bypass the cache (their partial stripes at either end cached)
        self._bypass = mock.patch.object(write_cache, "BYPASS_BLOCKS", 128 if fast else write_cache.BYPASS_BLOCKS)
        self._bypass.start()
        opts = MEMBERS[self.LEVEL]
        n = opts[members % len(opts)]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"model-{self.LEVEL}-", dir=TMP))
        cfg = Config(level=self.LEVEL, members=n, stripe_kib=stripe, cache_enabled=cache,
                     ld_kib=(2048, 2048) if two else (4096,), seed=seed)
        self.d = Driver(self.tmp, cfg, verbose=bool(os.environ.get("MODEL_VERBOSE")))
        type(self).sequences[self.LEVEL] = type(self).sequences.get(self.LEVEL, 0) + 1

    def _lun(self, i: int) -> int:
        luns = self.drv.luns
        return luns[i % len(luns)]

    # ------------------------------------------------------------------ host I/O
    @precondition(lambda self: "write" not in DISABLED)
    @rule(lun=IDX, lba=LBAS, n=SIZES, kill=KILL)
    def write(self, lun: int, lba: int, n: int, kill: int | None) -> None:
        self.drv.write(self._lun(lun), lba, n, kill=kill)

    @precondition(lambda self: "write_across_stripes" not in DISABLED)
    @rule(lun=IDX, stripe=st.integers(0, 200), delta=st.integers(-40, 40), n=SIZES, kill=KILL)
    def write_across_stripes(self, lun: int, stripe: int, delta: int, n: int, kill: int | None) -> None:
        d = self.drv
        su = d.cfg.stripe_kib * 2
        self.drv.write(self._lun(lun), max(0, stripe * su + delta), n, kill=kill)

    @precondition(lambda self: "write_fua" not in DISABLED)
    @rule(lun=IDX, lba=LBAS, n=SIZES, sixteen=st.booleans(), kill=KILL)
    def write_fua(self, lun: int, lba: int, n: int, sixteen: bool, kill: int | None) -> None:
        self.drv.write(self._lun(lun), lba, n, fua=True, sixteen=sixteen, kill=kill)

    @precondition(lambda self: "write16_or_same" not in DISABLED)
    @rule(lun=IDX, lba=LBAS, n=SIZES, same=st.booleans())
    def write16_or_same(self, lun: int, lba: int, n: int, same: bool) -> None:
        self.drv.write(self._lun(lun), lba, n, sixteen=True, same=same)

    @precondition(lambda self: "read" not in DISABLED)
    @rule(lun=IDX, lba=LBAS, n=SIZES, sixteen=st.booleans())
    def read(self, lun: int, lba: int, n: int, sixteen: bool) -> None:
        self.drv.read(self._lun(lun), lba, n, sixteen=sixteen)

    @precondition(lambda self: "sync" not in DISABLED)
    @rule(lun=IDX, lba=LBAS, n=st.sampled_from([0, 0, 8, 64, 1024]), kill=KILL)
    def sync(self, lun: int, lba: int, n: int, kill: int | None) -> None:
        nb = self.drv.model.lds[self._lun(lun)].num_blocks
        lba = 0 if n == 0 else lba % max(1, nb - n)
        self.drv.sync(self._lun(lun), lba, n, kill=kill)

    # ------------------------------------------------------------------ drive faults
    @precondition(lambda self: "media_error" not in DISABLED)
    @rule(slot=IDX, where=st.integers(0, 1 << 24), count=st.sampled_from([1, 1, 2, 8, 33, 256]),
          anywhere=st.booleans())
    def media_error(self, slot: int, where: int, count: int, anywhere: bool) -> None:
        self.drv.media_error(slot, where, count, anywhere)

    @precondition(lambda self: "clear_faults" not in DISABLED)
    @rule(i=IDX)
    def clear_faults(self, i: int) -> None:
        self.drv.clear(i)

    @precondition(lambda self: "fail_drive" not in DISABLED)
    @rule(i=IDX, member=st.booleans())
    def fail_drive(self, i: int, member: bool) -> None:
        self.drv.fail_drive(i, member)

    @precondition(lambda self: "pull_drive" not in DISABLED)
    @rule(i=IDX, member=st.booleans())
    def pull_drive(self, i: int, member: bool) -> None:
        self.drv.pull(i, member)

    @precondition(lambda self: "insert_drive" not in DISABLED)
    @rule(i=IDX, new=st.booleans())
    def insert_drive(self, i: int, new: bool) -> None:
        self.drv.insert(i, new)

    # ------------------------------------------------------------------ management
    @precondition(lambda self: "add_spare" not in DISABLED)
    @rule(i=IDX)
    def add_spare(self, i: int) -> None:
        self.drv.add_spare(i)

    @precondition(lambda self: "expand" not in DISABLED)
    @rule(count=st.sampled_from([1, 2]))
    def expand(self, count: int) -> None:
        self.drv.expand(count)

    @precondition(lambda self: "extend" not in DISABLED)
    @rule(i=IDX, kib=st.sampled_from([16, 64, 512, 1024]))
    def extend(self, i: int, kib: int) -> None:
        self.drv.extend(i, kib)

    @precondition(lambda self: "rebuild_priority" not in DISABLED)
    @rule(p=st.sampled_from(["high", "medium", "low"]))
    def rebuild_priority(self, p: str) -> None:
        self.drv.priority(p)

    # ------------------------------------------------------------------ time
    @precondition(lambda self: "advance" not in DISABLED)
    @rule(steps=st.integers(1, 4), kill=KILL)
    def advance(self, steps: int, kill: int | None) -> None:
        self.drv.tick(steps, kill=kill)

    @precondition(lambda self: "run_idle" not in DISABLED)
    @rule(kill=KILL)
    def run_idle(self, kill: int | None) -> None:
        self.drv.run_idle(kill=kill)

    @precondition(lambda self: "wait" not in DISABLED)
    @rule(seconds=st.sampled_from([0.05, 0.5, 2.0, 6.0]))
    def wait(self, seconds: float) -> None:
        self.drv.wait(seconds)

    # ------------------------------------------------------------------ cache, battery, power
    @precondition(lambda self: "set_cache" not in DISABLED)
    @rule(enabled=st.booleans(), kill=KILL)
    def set_cache(self, enabled: bool, kill: int | None) -> None:
        self.drv.set_cache(enabled, kill=kill)

    @precondition(lambda self: "battery" not in DISABLED)
    @rule(action=st.sampled_from(["fail", "remove", "low", "restore"]), kill=KILL)
    def battery(self, action: str, kill: int | None) -> None:
        self.drv.battery(action, kill=kill)

    @precondition(lambda self: "power_cut" not in DISABLED)
    @rule(long=st.booleans(), frac=st.integers(0, 100), kill=KILL)
    def power_cut(self, long: bool, frac: int, kill: int | None) -> None:
        self.drv.power_cut(long, frac, kill=kill)

    @precondition(lambda self: "kill" not in DISABLED)
    @rule(during_restart=KILL)
    def kill(self, during_restart: int | None) -> None:
        self.drv.kill(during_restart)

    # ------------------------------------------------------------------ checks
    @invariant()
    def blocks_read_back(self) -> None:
        if self.d is None:
            return
        self.n += 1
        type(self).steps_run[self.LEVEL] = type(self).steps_run.get(self.LEVEL, 0) + 1
        try:
            if self.n % SWEEP_EVERY == 0:
                self.drv.sweep()
            else:
                self.drv.sample()
        except Violation:
            self.broken = True
            raise

    def teardown(self) -> None:
        try:
            if self.d is not None and not self.broken and not self.d.broken:
                try:
                    self.d.sweep()
                except Violation:
                    self.broken = True
                    raise
        finally:
            for patch in (getattr(self, "_fast", None), getattr(self, "_io", None), getattr(self, "_bypass", None)):
                if patch is not None:
                    patch.stop()
            if self.d is not None:
                try:
                    self.d.close()
                except Exception:
                    pass
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)


def machine_for(level: str) -> type[DataPathMachine]:
    name = {"0": "Raid0", "1": "Raid1", "10": "Raid10", "5": "Raid5", "ADG": "RaidAdg"}[level]
    return type(f"{name}Machine", (DataPathMachine,), {"LEVEL": level})


LEVELS = ("0", "1", "10", "5", "ADG")
MACHINES = {lv: machine_for(lv) for lv in LEVELS}
