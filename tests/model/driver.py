"""The machine that drives a real Controller and checks every answer against the reference model.

One `Driver` is one shelf in a temporary state directory on a VirtualClock: an array of small
sparse drives with one or two small logical drives, a few unassigned drives for spares and
expansion, a 1 MiB cache with a short battery hold-up. Every operation goes through `act`,
which observes the array before and after (member states, rebuild points, media errors, the
layouts of an expansion), tells the model which blocks had their redundancy exceeded, and
checks what must hold whatever happened:

- a read answers each block with one of the model's acceptable contents, or an error only for
  a block that may error (MEDIUM ERROR naming it, or a failed unit);
- a failed unit stays failed (every read errors) until re-enabled (RAID 0: its drive is back);
- only a fault (drive fail, pull, media error) may expose blocks or fail a unit: an insert, a
  spare, a rebuild step, a copy-back, a restart must never lower the redundancy of any block;
- the cache writes through whenever the model knows it must (cache disabled, battery failed,
  removed, or not yet recharged);
- a power cut shorter than the hold-up time loses nothing.

Kills: `kill()` abandons the Controller without close() (its file descriptors are closed and the
cache mapping unmapped, nothing is written or flushed: what kill -9 leaves, since pwrite'd data
is in the page cache and so is the mapped cache file) and opens a new one on the state
directory. An operation run with `kill=N` is cut short at the N+1th member write
(firmware_model.enclosure.Drive.write raises KillNow, a BaseException nothing in the firmware
catches; part of that write's blocks may land first: a torn multi-block write), then the
Controller is abandoned and reopened. A host write cut short is unacknowledged: each of its
blocks holds the old or the new data, and nothing else may change.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_model.cache import LUN_SHIFT, CacheSettings
from firmware_model.clock import VirtualClock
from firmware_model.controller import (
    ArraySpec,
    Controller,
    ControllerError,
    LogicalDriveSpec,
    ShelfSpec,
)
from firmware_model.enclosure import Drive
from firmware_model.raid.api import MemberState
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status

from . import reference as refm
from .reference import BLOCK, Layout, Reference

MIB = 1 << 20
HOST = Nexus("iqn.2026-01.model:checker,i,0x000001", 1)
HOLDUP_S = 30.0
CHARGE_S = 5.0
OK_PCT = 90.0  # the battery's write-back threshold (firmware_model.battery.OK_PCT)
LOW_FAULT_PCT = 10.0


class KillNow(BaseException):
    """The emulator process dies at this member write (nothing in the firmware catches it)."""


class Violation(AssertionError):
    """The controller broke the promise; the message says where and how."""


@dataclass
class Config:
    level: str = "5"  # "0", "1", "10", "5", "ADG"
    members: int = 4
    stripe_kib: int = 16
    cache_enabled: bool = True
    ld_kib: tuple[int, ...] = (2048,)  # logical drives of array A, in order (LUN 1, 2...)
    extra_drives: int = 3  # unassigned drives after the members
    drive_mib: int = 20
    cache_mb: int = 1
    seed: int = 0

    def describe(self) -> str:
        return (f"RAID {self.level} x{self.members}, {self.stripe_kib} KiB stripe, LDs {list(self.ld_kib)} KiB, "
                f"cache {'on' if self.cache_enabled else 'off'}")


@dataclass
class Obs:
    state: str
    layouts: list[Layout]
    plausible: bool  # the unit may fail (too many whole members gone)
    expanding: bool
    num_blocks: int
    risk: set[int] = field(default_factory=set)


def sense_of(res: ScsiResult) -> tuple[int, int, int, int | None, bool]:
    """(key, asc, ascq, information, deferred) of a CHECK CONDITION."""
    s = bytes(res.sense)
    if not s:
        return (0, 0, 0, None, False)
    code = s[0] & 0x7F
    if code in (0x72, 0x73):
        info = None
        pos = 8
        while pos + 1 < len(s):
            if s[pos] == 0 and pos + 12 <= len(s):
                info = int.from_bytes(s[pos + 4 : pos + 12], "big")
            pos += 2 + s[pos + 1]
        return (s[1] & 0xF, s[2], s[3], info, code == 0x73)
    info = struct.unpack(">I", s[3:7])[0] if s[0] & 0x80 else None
    return (s[2] & 0xF, s[12], s[13], info, code == 0x71)


def _rw_cdb(write: bool, lba: int, n: int, fua: bool, sixteen: bool) -> bytes:
    flags = 0x08 if fua else 0
    if sixteen:
        return struct.pack(">BBQIBB", 0x8A if write else 0x88, flags, lba, n, 0, 0)
    return struct.pack(">BBIBHB", 0x2A if write else 0x28, flags, lba, 0, n, 0)


# Known bugs to step around while their fixes land, so that the checker finds others
# (MODEL_AVOID=reenable: no pulled drive goes back while a redundant unit is failed).
AVOID = frozenset(x.strip() for x in os.environ.get("MODEL_AVOID", "").split(",") if x.strip())
UNIT_FAILED_SENSES = {(0x2, 0x04, 0x03), (0x4, 0x3E, 0x01)}


class Driver:
    """One shelf, its reference model, and the checks (see the module docstring)."""

    def __init__(self, root: Path, cfg: Config, *, verbose: bool = False) -> None:
        self.root = Path(root)
        self.dir = self.root / "state"
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.clock = VirtualClock(100.0)
        self.verbose = verbose
        n = cfg.members
        self.member_bays = list(range(1, n + 1))
        self.bays = list(range(1, n + cfg.extra_drives + 3))  # members, extras, two empty bays
        drive_bytes = [0] * 14
        for b in range(1, n + cfg.extra_drives + 1):
            drive_bytes[b - 1] = cfg.drive_mib * MIB
        lds = [LogicalDriveSpec(i + 1, "A", cfg.level, kib * 1024, f"model{i + 1}", cfg.stripe_kib)
               for i, kib in enumerate(cfg.ld_kib)]
        self.spec = ShelfSpec(serial="MODELCHK01", drive_bytes=drive_bytes,
                              arrays=[ArraySpec("A", self.member_bays)], logical_drives=lds,
                              rebuild_priority="high",
                              cache=CacheSettings(size_mb=cfg.cache_mb, holdup_s=HOLDUP_S, charge_s=CHARGE_S,
                                                  spinup_s=0, enabled=cfg.cache_enabled))
        self.model = Reference()
        self.step = 0
        self.log: list[str] = []
        self.token = 0
        self.kills = 0
        self.broken = False
        self.deferred = 0
        self.cache_enabled = cfg.cache_enabled
        self.wt_until = -1.0  # the cache must write through until then (battery not charged)
        self.battery_gone = False  # failed or removed: write-through until restored and charged
        self.pending_sync = False
        self.ctrl: Controller = self._open()
        for u in self.ctrl.units():
            self.model.add_ld(u["lun"], u["blocks"])
        self.luns = sorted(self.model.lds)
        self.obs = self._observe()

    # ================================================================ plumbing
    def _open(self) -> Controller:
        return Controller(self.dir, self.spec, self.clock, wall=lambda: 1_700_000_000.0 + self.clock.now())

    def close(self) -> None:
        try:
            if not self.ctrl.closed:
                self.ctrl.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def note(self, text: str) -> None:
        self.log.append(f"{self.step}: {text}")
        if self.verbose:
            print(f"  [{self.step}] {text}", file=sys.stderr)

    def fail(self, what: str) -> None:
        self.broken = True
        tail = "\n".join(self.log[-40:])
        raise Violation(f"{what}\n-- shelf: {self.cfg.describe()}, seed {self.cfg.seed}\n-- last steps:\n{tail}")

    @staticmethod
    def abandon(ctrl: Any) -> None:
        """What kill -9 leaves: close descriptors, unmap the cache; write and flush nothing."""
        drives: list[Drive] = []
        enc = getattr(ctrl, "enclosure", None)
        if enc is not None:
            drives += [d for d in enc.bays.values() if d is not None] + list(enc.aside.values())
        for arr in getattr(ctrl, "arrays", {}).values():
            drives += list(arr.members)
        for d in drives:
            if d.fd is not None:
                try:
                    os.close(d.fd)
                except OSError:
                    pass
                d.fd = None
        cache = getattr(ctrl, "cache", None)
        if cache is not None:
            try:
                cache._unmap()
            except BufferError:  # views of the mapping still alive (in a dead frame): collect them
                gc.collect()
                try:
                    cache._unmap()
                except BufferError:  # close the descriptor at least
                    if cache._fd >= 0:
                        os.close(cache._fd)
                        cache._fd = -1
        for name in ("intents", "member_journal"):  # the write-intent mapping, the journal's descriptor
            f = getattr(ctrl, name, None)
            if f is not None:
                try:
                    f.close()
                except BufferError:
                    gc.collect()
        ctrl.closed = True

    @contextmanager
    def _killer(self, after: int | None) -> Iterator[None]:
        """Member write number `after`+1 dies (KillNow), possibly after part of it landed."""
        if after is None:
            yield
            return
        real = Drive.write
        count = [0]
        rng = self.rng

        def dying(drive: Drive, offset: int, data: Any) -> None:
            if count[0] >= after:
                mv = memoryview(data).cast("B")
                nb = len(mv) // BLOCK
                keep = rng.randrange(nb + 1) if nb > 1 and rng.random() < 0.5 else 0
                if keep:
                    real(drive, offset, mv[: keep * BLOCK])
                self.model.weak.append((offset, offset + len(mv)))
                raise KillNow(f"member write {after + 1} (bay {drive.bay}, byte {offset}, {keep}/{nb} blocks landed)")
            count[0] += 1
            real(drive, offset, data)

        Drive.write = dying  # type: ignore[method-assign]
        try:
            yield
        finally:
            Drive.write = real  # type: ignore[method-assign]

    def _died(self, exc: KillNow, where: str) -> None:
        """Abandon whatever controller was running (even one half way through __init__)."""
        victims: list[Any] = [self.ctrl]
        tb = exc.__traceback__
        while tb is not None:
            f = tb.tb_frame
            if f.f_code is Controller.__init__.__code__:
                victims.append(f.f_locals.get("self"))
            tb = tb.tb_next
        exc.__traceback__ = None
        del tb
        self.kills += 1
        self.note(f"KILLED in {where}: {exc}")
        for v in victims:
            if v is not None and not getattr(v, "_closed", False):
                self.abandon(v)

    def reopen(self, kill: int | None = None) -> None:
        """A new controller on the state directory (the old one is already abandoned)."""
        for attempt in range(3):
            try:
                with self._killer(kill if attempt == 0 else None):
                    self.ctrl = self._open()
                return
            except KillNow as exc:
                self._died(exc, "restart (cache replay, expansion replay)")
        raise AssertionError("unreachable")

    # ================================================================ observation
    def _observe(self) -> dict[int, Obs]:
        c = self.ctrl
        out: dict[int, Obs] = {}
        for lun, ld in c.lds.items():
            arr = c.arrays[ld.cfg.array]
            members = list(arr.members)
            su = ld.cfg.stripe_kib * 1024
            nb = ld.cfg.num_blocks
            exp = arr.cfg.expand
            layouts: list[Layout] = []
            el = next((x for x in exp.lds if x.lun == lun and not x.done), None) if exp is not None else None
            if el is not None and exp is not None:
                moved = el.watermark // BLOCK
                layouts.append(self._layout(el.old_raid, members[: exp.old_count], su, el.old_base, nb, (moved, nb)))
                layouts.append(self._layout(el.new_raid, members, su, el.new_base, nb, (0, moved)))
            else:
                layouts.append(self._layout(ld.cfg.raid, members, su, ld.cfg.base_offset, nb, (0, nb)))
            risk: set[int] = set()
            for lay in layouts:
                risk |= refm.at_risk(lay)
            out[lun] = Obs(ld.state.value, layouts, any(refm.failure_plausible(x) for x in layouts),
                           el is not None, nb, risk)
        return out

    def _layout(self, level: str, members: list[Drive], su: int, base: int, nb: int, lbas: tuple[int, int]) -> Layout:
        unavailable: list[list[tuple[int, int]]] = []
        whole: list[bool] = []
        for d in members:
            st = d.state
            iv: list[tuple[int, int]] = []
            if st is MemberState.FAILED:
                iv.append((0, 1 << 62))
            elif st is MemberState.REBUILDING:
                iv.append((d.rebuilt_to, 1 << 62))
            iv += [(e.offset, e.offset + e.length) for e in d.media_errors]
            unavailable.append(iv)
            whole.append(st is not MemberState.OK)
        return Layout(level, su, base, nb, unavailable, whole, lbas, self.model.weak)

    def _apply(self, obs: dict[int, Obs], desc: str) -> None:
        """What an observation means for the model: exceeded redundancy, failed units."""
        for lun, o in obs.items():
            ld = self.model.lds[lun]
            if o.risk:
                self.model.at_risk(lun, o.risk, f"step {self.step} ({desc}): redundancy exceeded")
            if o.state == "failed" and not ld.failed:
                self.note(f"LUN {lun} failed")
                self.model.unit_failed(lun, f"step {self.step}: {desc}")

    # ================================================================ one step
    def act(self, desc: str, fn: Callable[[], Any], *, fault: bool = False, kill: int | None = None,
            on_kill: Callable[[], None] | None = None) -> Any:
        """Run one operation with the observations and checks around it."""
        self.step += 1
        self.note(desc + (f" [kill after {kill} member writes]" if kill is not None else ""))
        before = self.obs
        self._apply(before, desc)
        result = None
        killed = False
        dying: dict[int, Obs] = {}
        try:
            with self._killer(kill):
                result = fn()
        except KillNow as exc:
            killed = True
            # what the dying controller's members looked like, with the row the kill left torn:
            # the restart's recovery may settle that row (remapping the media errors it meets)
            # before the next observation could see it over budget
            dying = self._observe() if not getattr(self.ctrl, "_closed", True) else {}
            self._died(exc, desc)
            if on_kill is not None:
                on_kill()
            self.reopen()
            if self.pending_sync:
                self._resync_settings()
        except ControllerError as exc:
            self.note(f"refused: {exc}")
        if kill is not None and not killed:
            self.note("finished before the kill point: killed after it")
            self.abandon(self.ctrl)
            self.kills += 1
            self.reopen()
            killed = True
        after = self._observe()
        if killed:
            for lun, obs in dying.items():
                if lun in after:
                    after[lun].risk |= obs.risk
        self.obs = after
        # a kill inside an operation is a fault too: it may leave a row torn (see Reference.weak)
        self._check_transition(before, after, desc, fault or killed)
        self._apply(after, desc)
        self._settle_cache()
        return result

    def _resync_settings(self) -> None:
        """A cache or battery operation was cut short by a kill: what the restarted controller
        has is what happened (the operation took effect or it did not)."""
        self.pending_sync = False
        c = self.ctrl
        self.cache_enabled = bool(c.cache_cfg.enabled)
        st = c.battery.state(self.clock.now()).value
        self.battery_gone = st in ("failed", "missing")
        if st == "ok":
            self.wt_until = -1.0
        self.note(f"after the kill: cache {'enabled' if self.cache_enabled else 'disabled'}, battery {st}")

    def _check_transition(self, before: dict[int, Obs], after: dict[int, Obs], desc: str, fault: bool) -> None:
        for lun, a in after.items():
            b = before.get(lun)
            ld = self.model.lds[lun]
            if b is None:
                continue
            if ld.failed and a.state != "failed":
                # a unit comes back only when a drive it lost is back (its data is then checked:
                # a stale drive must not serve old data)
                if "INSERT" not in desc or a.plausible:
                    self.fail(f"LUN {lun} failed at some point and is now {a.state!r} without being re-enabled")
                self.note(f"LUN {lun} re-enabled ({a.state}) by {desc}")
                self.model.unit_reenabled(lun)
            if a.state == "failed" and b.state != "failed" and not (a.plausible or b.plausible):
                self.fail(f"LUN {lun} failed after {desc!r} though no more members were gone than "
                          f"RAID {a.layouts[0].level} tolerates")
            if fault or a.expanding or b.expanding or a.num_blocks != b.num_blocks:
                continue
            if a.state == "failed" and b.state != "failed":
                self.fail(f"{desc!r} is not a fault, yet LUN {lun} failed")
            new = a.risk - b.risk
            if new:
                first = min(new)
                self.fail(f"{desc!r} is not a fault, yet it exposed {len(new)} blocks of LUN {lun} "
                          f"(first LBA {first}): their redundancy is exceeded now. Members after: "
                          f"{self._members_text()}")
        if self.ctrl.powered and self.ctrl.cache.write_back and self.must_write_through():
            self.fail(f"the cache is write-back after {desc!r}, though it must write through "
                      f"(cache {'enabled' if self.cache_enabled else 'disabled'}, battery "
                      f"{'failed/removed' if self.battery_gone else 'not charged'})")

    def _members_text(self) -> str:
        out = []
        for arr in self.ctrl.arrays.values():
            for i, d in enumerate(arr.members):
                out.append(f"slot {i}: bay {d.bay} {d.serial} {d.state.value}"
                           + (f"@{d.rebuilt_to}" if d.state is MemberState.REBUILDING else "")
                           + (f" media {[(e.offset, e.length) for e in d.media_errors]}" if d.media_errors else ""))
        return "; ".join(out)

    def _settle_cache(self) -> None:
        """Blocks with no unwritten cache line are on the drives: they survive any cache loss."""
        c = self.ctrl
        if not c.powered:
            return
        keys = getattr(c.cache, "_dirty", None)
        per: dict[int, set[int]] = {lun: set() for lun in self.model.lds}
        if keys is None:
            return
        for k in keys:
            lun = k >> LUN_SHIFT
            if lun in per:
                line = k & ((1 << LUN_SHIFT) - 1)
                per[lun].update(range(line * 8, line * 8 + 8))
        for lun, keep in per.items():
            self.model.durable_except(lun, keep)

    def must_write_through(self) -> bool:
        return (not self.cache_enabled) or self.battery_gone or self.clock.now() < self.wt_until

    # ================================================================ SCSI
    def execute(self, lun: int, cdb: bytes, data: bytes = b"") -> ScsiResult:
        """One command; unit attentions and deferred errors are taken and the command retried."""
        for _ in range(16):
            res = self.ctrl.target.execute(ScsiRequest(HOST, lun, cdb, data, len(data)))
            if res.status == Status.CHECK_CONDITION:
                key, asc, ascq, info, deferred = sense_of(res)
                if key == 0x6:
                    continue
                if deferred:
                    self.deferred += 1
                    self.note(f"deferred error {key:x}/{asc:02x}/{ascq:02x} LBA {info}")
                    continue
            return res
        raise AssertionError("unit attentions never stop")

    def _new_token(self, desc: str) -> int:
        self.token += 1
        self.model.origin[self.token] = f"step {self.step}: {desc}"
        return self.token

    def _wrap(self, lun: int, lba: int, n: int) -> tuple[int, int]:
        nb = self.model.lds[lun].num_blocks
        n = max(1, min(n, nb))
        return lba % (nb - n + 1), n

    def write(self, lun: int, lba: int, n: int, *, fua: bool = False, sixteen: bool = False,
              same: bool = False, kill: int | None = None) -> None:
        lba, n = self._wrap(lun, lba, n)
        kind = "WRITE SAME" if same else f"WRITE({16 if sixteen else 10}){' FUA' if fua else ''}"
        desc = f"{kind} LUN {lun} LBA {lba}+{n}"
        state: dict[str, Any] = {}

        def go() -> None:
            token = self._new_token(desc)
            state["token"] = token
            if same:
                self.model.same.add(token)
                payload = refm.block(lun, 0, token, True)
                cdb = struct.pack(">BBQIBB", 0x93, 0, lba, n, 0, 0)
            else:
                payload = refm.blocks(lun, lba, n, token)
                cdb = _rw_cdb(True, lba, n, fua, sixteen)
            durable = fua or not self.ctrl.cache.write_back or self.must_write_through()
            res = self.execute(lun, cdb, payload)
            if res.status == Status.GOOD:
                self.model.acked(lun, lba, n, token, durable)
                return
            self.model.unacked(lun, lba, n, token)
            self._write_error(lun, lba, n, res, desc)

        def killed() -> None:
            if "token" in state:
                self.model.unacked(lun, lba, n, state["token"])

        self.act(desc, go, kill=kill, on_kill=killed)
        self.check_read(lun, lba, n)

    def _write_error(self, lun: int, lba: int, n: int, res: ScsiResult, desc: str) -> None:
        key, asc, ascq, info, _ = sense_of(res)
        if (key, asc, ascq) in UNIT_FAILED_SENSES and (self.model.lds[lun].failed or self.obs[lun].plausible
                                                       or self._observe()[lun].plausible):
            self.note(f"{desc}: unit failed ({key:x}/{asc:02x}/{ascq:02x})")
            return
        if key == 0x3 and self.model.may_error(lun, lba, n):
            self.note(f"{desc}: MEDIUM ERROR {asc:02x}/{ascq:02x} LBA {info}")
            return
        if key == 0x3 and any(self.model.lds[lun].lost):
            # a write may need to read other blocks of its rows: allowed if that row may error
            self.note(f"{desc}: MEDIUM ERROR {asc:02x}/{ascq:02x} LBA {info} (rows with lost blocks)")
            if info is not None and not self.model.may_error(lun, info):
                self.fail(f"{desc} answered MEDIUM ERROR naming LBA {info}, which may not error")
            return
        self.fail(f"{desc} answered {res.status.name} {key:x}/{asc:02x}/{ascq:02x} info {info}: "
                  f"nothing in its range may error")

    def sync(self, lun: int, lba: int = 0, n: int = 0, kill: int | None = None) -> None:
        desc = f"SYNCHRONIZE CACHE LUN {lun} LBA {lba}+{n or 'all'}"

        def go() -> None:
            res = self.execute(lun, struct.pack(">BBIBHB", 0x35, 0, lba, 0, n, 0))
            if res.status == Status.GOOD:
                self.model.durable(lun, lba, n or None)
                return
            key, asc, ascq, _info, _ = sense_of(res)
            ld = self.model.lds[lun]
            if ld.failed or ld.lost or self._observe()[lun].plausible:
                self.note(f"{desc}: {key:x}/{asc:02x}/{ascq:02x}")
                return
            self.fail(f"{desc} answered {key:x}/{asc:02x}/{ascq:02x} though no block may error")

        self.act(desc, go, kill=kill)

    def read(self, lun: int, lba: int, n: int, *, sixteen: bool = False) -> None:
        lba, n = self._wrap(lun, lba, n)
        self.step += 1
        self.note(f"READ({16 if sixteen else 10}) LUN {lun} LBA {lba}+{n}")
        self.check_read(lun, lba, n, sixteen=sixteen)

    def check_read(self, lun: int, lba: int, n: int, *, sixteen: bool = False, depth: int = 0) -> None:
        """Read and check every block (an error only where the model allows one)."""
        if not self.ctrl.powered or n <= 0:
            return
        ld = self.model.lds[lun]
        res = self.execute(lun, _rw_cdb(False, lba, n, False, sixteen))
        if res.status == Status.GOOD:
            data = bytes(res.data)
            if ld.failed:
                self.fail(f"LUN {lun} failed, yet READ LBA {lba}+{n} answered GOOD")
            if len(data) != n * BLOCK:
                self.fail(f"READ LUN {lun} LBA {lba}+{n} returned {len(data)} bytes")
            for i in range(n):
                blk = data[i * BLOCK : (i + 1) * BLOCK]
                if blk in (self.model.expected(lun, lba + i, t) for t in ld.acceptable(lba + i)):
                    continue
                self.fail(self.model.check_block(lun, lba + i, blk) or "?")
            return
        key, asc, ascq, info, _ = sense_of(res)
        if (key, asc, ascq) in UNIT_FAILED_SENSES:
            if ld.failed:
                return
            now = self._observe()
            if not (ld.failed or self.obs[lun].plausible or now[lun].plausible):
                self.fail(f"READ LUN {lun} LBA {lba}+{n}: unit failed ({key:x}/{asc:02x}/{ascq:02x}) though "
                          f"no more members are gone than the level tolerates: {self._members_text()}")
            self.obs = now
            self._apply(now, "read")
            return
        if key == 0x3 and info is not None and lba <= info < lba + n:
            if not self.model.may_error(lun, info):
                self.fail(f"READ LUN {lun} LBA {lba}+{n}: MEDIUM ERROR {asc:02x}/{ascq:02x} at LBA {info}, a block "
                          f"that must survive (acceptable: {self.model.describe(lun, info)}). Members: "
                          f"{self._members_text()}")
            if depth < 4:
                self.check_read(lun, lba, info - lba, depth=depth + 1)
                self.check_read(lun, info + 1, lba + n - info - 1, depth=depth + 1)
            return
        self.fail(f"READ LUN {lun} LBA {lba}+{n} answered {res.status.name} {key:x}/{asc:02x}/{ascq:02x} "
                  f"info {info}")

    def sweep(self) -> None:
        """Read back every block of every logical drive."""
        if not self.ctrl.powered:
            return
        self.note("sweep")
        for lun in self.luns:
            nb = self.model.lds[lun].num_blocks
            for lba in range(0, nb, 512):
                self.check_read(lun, lba, min(512, nb - lba))

    def sample(self) -> None:
        """A few reads after a step: a random window and the blocks that may be lost."""
        if not self.ctrl.powered:
            return
        for lun in self.luns:
            ld = self.model.lds[lun]
            lba = self.rng.randrange(ld.num_blocks)
            self.check_read(lun, lba, min(64, ld.num_blocks - lba))
            if ld.lost:
                b = self.rng.choice(sorted(ld.lost)) if len(ld.lost) < 512 else min(ld.lost)
                lo = max(0, b - 40)
                self.check_read(lun, lo, min(80, ld.num_blocks - lo))

    # ================================================================ faults and management
    def _drive(self, bay: int) -> Drive | None:
        return self.ctrl.enclosure.bays.get(bay)

    def _array(self) -> Any:
        return self.ctrl.arrays["A"]

    def bay_of(self, i: int) -> int:
        return self.bays[i % len(self.bays)]

    def fail_drive(self, i: int, member: bool = True) -> None:
        bay = self._member_bay(i) if member else self.bay_of(i)
        if bay is None:
            return
        self.act(f"FAULT DISK{bay} FAIL", lambda: self.ctrl.fault_disk(bay, "fail"), fault=True)

    def pull(self, i: int, member: bool = True) -> None:
        bay = self._member_bay(i) if member else self.bay_of(i)
        if bay is None or self._drive(bay) is None:
            return
        self.act(f"PULL DISK{bay}", lambda: self.ctrl.fault_disk(bay, "pull"), fault=True)

    def _member_bay(self, i: int) -> int | None:
        members = self._array().members
        d = members[i % len(members)]
        return d.bay

    def insert(self, i: int, new: bool) -> None:
        bay = self.bay_of(i)
        d = self._drive(bay)
        if d is not None and not d.failed:
            return
        if d is not None:
            new = True
        if not new and not [x for x in self.ctrl.enclosure.aside.values() if x.last_bay == bay and not x.failed]:
            new = True
        if not new and "reenable" in AVOID and any(
                ld.failed and self.obs[lun].layouts[0].level != "0" for lun, ld in self.model.lds.items()):
            return  # a known bug: a failed redundant unit comes back with stale members
        self.act(f"INSERT DISK{bay} {'new blank drive' if new else 'the drive pulled from it'}",
                 lambda: self.ctrl.fault_disk(bay, "insert", new=new))

    def media_error(self, slot: int, where: int, count: int, anywhere: bool = False) -> None:
        arr = self._array()
        if anywhere:
            bay = self.bay_of(slot)
            d = self._drive(bay)
            if d is None:
                return
            lba = where % (d.data_bytes // BLOCK - count)
        else:
            members = arr.members
            d = members[slot % len(members)]
            if d.bay is None or not d.present:
                return
            bay = d.bay
            lun = self.luns[where % len(self.luns)]
            ld = self.ctrl.lds[lun]
            base = ld.cfg.base_offset
            per = ld.volume.per_member_bytes
            lba = (base + (where * 7919) % per) // BLOCK
        self.act(f"FAULT DISK{bay} MEDIA-ERROR {lba} {count}",
                 lambda: self.ctrl.fault_disk(bay, "media-error", lba=lba, count=count), fault=True)

    def clear(self, i: int) -> None:
        bay = self.bay_of(i)
        if self._drive(bay) is None:
            return
        self.act(f"FAULT DISK{bay} CLEAR", lambda: self.ctrl.fault_disk(bay, "clear"))

    def _unassigned(self) -> list[int]:
        out = []
        for bay in self.bays:
            d = self._drive(bay)
            if d is not None and not d.failed and self.ctrl.views.role(d)[0] == "unassigned":
                out.append(bay)
        return out

    def add_spare(self, i: int) -> None:
        free = self._unassigned()
        if not free:
            return
        bay = free[i % len(free)]
        self.act(f"ADD SPARE DISK{bay}", lambda: self.ctrl.add_spare(self.luns[0], [bay]))

    def expand(self, count: int) -> None:
        free = self._unassigned()[:count]
        if len(free) < count:
            return
        self.act(f"EXPAND bays {free}", lambda: self.ctrl.expand_unit(self.luns[0], free))

    def extend(self, i: int, kib: int) -> None:
        lun = self.luns[-1]
        ld = self.ctrl.lds[lun]
        size = ld.size_bytes + kib * 1024

        def go() -> None:
            self.ctrl.extend_unit(lun, size)
            self.model.extend(lun, size // BLOCK)

        self.act(f"EXTEND LUN {lun} to {size} bytes", go)

    def priority(self, p: str) -> None:
        self.act(f"SET REBUILD PRIORITY {p}", lambda: self.ctrl.set_rebuild_priority(p))

    def tick(self, steps: int, kill: int | None = None) -> None:
        """`steps` deadlines of background work (rebuild, expansion, destage, battery)."""
        def go() -> None:
            for _ in range(steps):
                d = self.ctrl.next_deadline()
                if d is None:
                    break
                if d > self.clock.now():
                    self.clock.advance(d - self.clock.now())
                self.ctrl.advance(self.clock.now())

        self.act(f"ADVANCE {steps} deadlines", go, kill=kill)

    def wait(self, seconds: float) -> None:
        def go() -> None:
            self.clock.advance(seconds)
            self.ctrl.advance(self.clock.now())

        self.act(f"WAIT {seconds} s", go)

    def run_idle(self, kill: int | None = None) -> None:
        def go() -> None:
            for _ in range(5000):
                d = self.ctrl.next_deadline()
                if d is None:
                    return
                if d > self.clock.now():
                    self.clock.advance(d - self.clock.now())
                self.ctrl.advance(self.clock.now())

        self.act("RUN IDLE (all background work)", go, kill=kill)

    def set_cache(self, enabled: bool, kill: int | None = None) -> None:
        def go() -> None:
            self.ctrl.set_cache(enabled=enabled)
            self.cache_enabled = enabled

        def killed() -> None:
            self.pending_sync = True  # cut short: it took effect or not; the restart tells

        self.act(f"SET CACHE {'ENABLE' if enabled else 'DISABLE'}", go, kill=kill, on_kill=killed)

    def battery(self, action: str, kill: int | None = None) -> None:
        def go() -> None:
            self.ctrl.fault_battery(action)
            now = self.clock.now()
            if action in ("fail", "remove"):
                self.battery_gone = True
            elif action == "low":
                # charging from at most 10 % to 90 % takes at least 80 % of the charge time
                self.wt_until = max(self.wt_until, now + (OK_PCT - LOW_FAULT_PCT) / 100 * CHARGE_S * 0.99)
            elif action == "restore":
                self.battery_gone = False
                self.wt_until = max(self.wt_until, now + OK_PCT / 100 * CHARGE_S * 0.99)

        def killed() -> None:
            self.pending_sync = True

        self.act(f"FAULT BATTERY {action.upper()}", go, kill=kill, on_kill=killed)

    def power_cut(self, long: bool, frac: int, kill: int | None = None) -> None:
        """Power off, wait, power on: a cut longer than the hold-up may lose the cache."""
        desc = f"POWER CUT ({'longer' if long else 'shorter'} than the hold-up)"
        state: dict[str, Any] = {}

        def go() -> None:
            r = self.ctrl.power_off()
            h = float(r["holdup_seconds"])
            off = h + 1 + frac if long or h <= 0 else h * (frac % 90 + 1) / 100
            state["lossy"] = lossy = off > h or h <= 0
            self.note(f"off for {off:.1f} s (hold-up {h:.1f} s, {r['dirty_bytes']} bytes dirty)")
            self.clock.advance(off)
            if lossy:
                for lun in self.luns:
                    self.model.cache_lost(lun, f"step {self.step}: power cut of {off:.0f} s, hold-up {h:.0f} s")
            # the charge drops while the battery holds the cache; write-back waits for 90 %
            drained = min(off / HOLDUP_S * 100, 100.0) - (100 - OK_PCT)
            out = self.ctrl.power_on()
            if drained > 0:
                self.wt_until = max(self.wt_until, self.clock.now() + drained / 100 * CHARGE_S * 0.99)
            lost = {k: v for k, v in out["data_lost"].items() if not self.model.lds[int(k)].failed}
            if lost and not lossy:
                self.fail(f"a power cut of {off} s within the {h} s hold-up lost cache data: {lost}")

        def killed() -> None:
            self.pending_sync = True

        self.act(desc, go, kill=kill, on_kill=killed)

    def kill(self, during_restart: int | None = None) -> None:
        def go() -> None:
            self.abandon(self.ctrl)
            self.kills += 1
            self.reopen(kill=during_restart)

        # a fault for the redundancy check: a restart may forget rebuild progress made since the
        # last checkpoint, and rebuild those rows again (reported, see the module docstring)
        self.act("KILL -9 and restart" + (f" (dies again at member write {during_restart + 1} of the restart)"
                                          if during_restart is not None else ""), go, fault=True)
