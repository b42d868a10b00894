"""The array controller: drives, arrays, logical drives with real RAID, spares, rebuild, growth.

This is the shelf as the firmware sees it. The enclosure (firmware_model.enclosure) holds
the drives; the controller groups them into arrays (A, B, C...), carves logical drives
(LUN 1-32, each a RaidVolume on its own extent of the array's members) and serves them
through the SCSI target. It keeps the configuration where Smart Array keeps it: on every
drive's reserved area and in NVRAM (firmware_model.metadata), so a restart comes back as
it was, and drives are recognised by serial wherever they sit.

Background work (rebuild onto a spare or a replaced drive, capacity expansion) runs in
bounded steps from `advance(now)`, paced by the rebuild priority; `next_deadline()` says
when the next step is due, so the asyncio process or a test on a virtual clock drives it.
Every operation the management layer offers is a method here that validates its input and
raises ControllerError with one line on bad input.

Sense data chosen for a failed logical drive (see ARCHITECTURE "Errors are answers"):
- media-access commands, TEST UNIT READY included: NOT READY, 04/03 LOGICAL UNIT NOT READY,
  MANUAL INTERVENTION REQUIRED (hpsa's `hpsa_volume_offline` expects a failed Smart Array
  volume to answer TEST UNIT READY with NOT READY/ASC 04);
- the command during which the unit fails: HARDWARE ERROR, 3E/01 LOGICAL UNIT FAILURE;
- a read the redundancy cannot cover: MEDIUM ERROR, 11/00 UNRECOVERED READ ERROR, with the
  first bad LBA in the INFORMATION field.

The array accelerator (firmware_model.cache, one cache shared by all logical drives) and its
battery (firmware_model.battery):
- write-back while the cache is enabled, its write share is above 0 % and the battery is ok
  (or "no-battery write cache" is forced on); otherwise everything is destaged and the cache
  writes through. The caching page's WCE follows the controller: it reads 0 and is not
  changeable while the cache writes through; the host's own WCE choice (MODE SELECT) is kept
  and applies again with write-back (effective write-back = host WCE and controller
  write-back). Each logical drive whose WCE changed queues MODE PARAMETERS CHANGED (2A/01)
  for every I_T nexus.
- power off: logical drives answer NOT READY 04/00 (the process drops the connections too);
  power on: the cache replays what the battery kept, every nexus gets POWER ON (29/00) first
  (SAM priority), then media access answers NOT READY 04/01 BECOMING READY for the spin-up time.
- unwritten cache data lost (a cut longer than the hold-up, no battery with write-back forced,
  a logical drive that failed before its data was destaged): event CACHE_DATA_LOST naming LUNs
  and block counts, and each affected logical drive reports, once to every I_T nexus, a deferred
  error (response code 71h/73h, SPC-4 4.5.5: an error of an earlier, acknowledged command):
  MEDIUM ERROR 0C/00 WRITE ERROR with the first lost LBA in INFORMATION. Linux logs it and
  retries the command that received it. The product's agents showed this as "Bad Data".
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from .battery import Battery, BatteryState
from .cache import CACHE_FILE, RATIOS, CachedVolume, CacheError, CacheSettings, WriteCache
from .clock import Clock, MonotonicClock
from .enclosure import (
    BAY_COUNT,
    FAN_COUNT,
    PSU_COUNT,
    ComponentState,
    Drive,
    DriveState,
    Enclosure,
    EnclosureError,
)
from .events import EVENTS_FILE, Event, EventCode, EventLog, Severity
from .lost_blocks import LostBlocks
from .metadata import (
    METADATA_BYTES,
    ArrayConfig,
    DriveRecord,
    ExpandConfig,
    ExpandLd,
    LdConfig,
    MetadataError,
    ShelfConfig,
)
from .raid.api import DriveError, MemberState, RaidLevel, UnrecoverableRead, VolumeFailed
from .raid.layout import Layout, capacity_bytes, data_members
from .raid.layout import validate as validate_layout
from .raid.volume import MemberWrite, RaidVolume, restripe, restripe_safe, resync_untrusted
from .rso import Rso, RsoError
from .rso_scsi import register_rso_commands
from .scsi.constants import SenseKey
from .scsi.errors import ScsiError
from .scsi.identity import TargetIdentity, naa5
from .scsi.sbc import BlockUnit
from .scsi.target import ScsiTarget
from .scsi.units import ControllerUnit
from .write_journal import NEW_LAYOUT, NO_ROW, IntentLog, MemberJournal

PORT_COUNT = 2
BLOCK_SIZE = 512
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
MAX_LUNS = 32
STRIPE_KIB = (16, 32, 64, 128, 256)
DEFAULT_STRIPE_KIB = 64
NVRAM_FILE = "controller-nvram.json"
JOURNAL_FILE = "expand-journal.bin"
NVRAM_FORMAT = 2
CAPACITY_DATA_HAS_CHANGED = 0x2A09
TEMP_WARN_C = 50.0
TEMP_CRIT_C = 60.0

RAID_NAMES: dict[str, RaidLevel] = {
    "0": RaidLevel.RAID0,
    "1": RaidLevel.RAID1,
    "10": RaidLevel.RAID10,
    "1+0": RaidLevel.RAID10,
    "5": RaidLevel.RAID5,
    "6": RaidLevel.ADG,
    "adg": RaidLevel.ADG,
}


def raid_label(level: RaidLevel) -> str:
    return {RaidLevel.RAID10: "1+0", RaidLevel.ADG: "ADG"}.get(level, level.value)


class ShelfError(Exception):
    """A shelf that cannot be built or opened as described."""


class ControllerError(ShelfError):
    """An operation refused: the message names the problem in one line."""


class UnitState(StrEnum):
    OK = "ok"
    INTERIM_RECOVERY = "interim recovery"
    REBUILDING = "rebuilding"
    EXPANDING = "expanding"
    FAILED = "failed"


class RebuildPriority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


# priority -> (bytes per step, seconds between steps, steps per advance call at most)
PACE: dict[RebuildPriority, tuple[int, float, int]] = {
    RebuildPriority.HIGH: (4 * MIB, 0.0, 4),
    RebuildPriority.MEDIUM: (2 * MIB, 0.1, 1),
    RebuildPriority.LOW: (1 * MIB, 0.5, 1),
}


def unit_failed_sense() -> ScsiError:
    """HARDWARE ERROR 3E/01 LOGICAL UNIT FAILURE: the unit failed during this command."""
    return ScsiError(SenseKey.HARDWARE_ERROR, 0x3E, 0x01)


def unit_offline_sense() -> ScsiError:
    """NOT READY 04/03 MANUAL INTERVENTION REQUIRED: a failed logical drive."""
    return ScsiError(SenseKey.NOT_READY, 0x04, 0x03)


def becoming_ready_sense() -> ScsiError:
    """NOT READY 04/01 IN PROCESS OF BECOMING READY: drives spinning up after power on."""
    return ScsiError(SenseKey.NOT_READY, 0x04, 0x01)


def powered_off_sense() -> ScsiError:
    """NOT READY 04/00: the shelf has no power (the process drops connections anyway)."""
    return ScsiError(SenseKey.NOT_READY, 0x04, 0x00)


def cache_data_lost_sense(lba: int) -> ScsiError:
    """MEDIUM ERROR 0C/00 WRITE ERROR, reported as a deferred error: acknowledged writes
    from the cache were lost; INFORMATION holds the first lost LBA."""
    return ScsiError(SenseKey.MEDIUM_ERROR, 0x0C, 0x00, info=lba)


def unrecovered_read(lba: int) -> ScsiError:
    """MEDIUM ERROR 11/00 with the first bad LBA in the INFORMATION field."""
    return ScsiError(SenseKey.MEDIUM_ERROR, 0x11, 0x00, info=lba)


def parse_raid(raid: str | int | RaidLevel) -> RaidLevel:
    if isinstance(raid, RaidLevel):
        return raid
    level = RAID_NAMES.get(str(raid).strip().lower())
    if level is None:
        raise ControllerError(f"RAID level {raid!r} unknown (0, 1, 1+0, 5, ADG)")
    return level


# ------------------------------------------------------------------------------ the spec
@dataclass
class LunSpec:
    """Old simple form: LUN on one bay = a single-drive RAID 0 array per bay."""

    lun: int
    bay: int
    size_bytes: int
    name: str = ""


@dataclass
class ArraySpec:
    name: str
    bays: list[int]
    spares: list[int] = field(default_factory=list)


@dataclass
class LogicalDriveSpec:
    lun: int
    array: str
    raid: str
    size_bytes: int | None = None  # None: the rest of the array
    name: str = ""
    stripe_kib: int | None = None


def _default_drives() -> list[int]:
    return [36 * GIB] * 10 + [0] * 4


@dataclass
class ShelfSpec:
    """What a new shelf is built from (the TOML config's [shelf] section).

    `drive_bytes` gives each bay's drive size (0: empty bay). The layout is either the old
    simple `luns` (one single-drive RAID 0 array per bay used) or `arrays` +
    `logical_drives`; with neither, the default showcase shelf (see `default_layout`).
    """

    serial: str = "E03KMN5W2T"
    drive_bytes: list[int] = field(default_factory=_default_drives)
    luns: list[LunSpec] = field(default_factory=list)
    arrays: list[ArraySpec] | None = None
    logical_drives: list[LogicalDriveSpec] | None = None
    product: str = "MSA500"
    firmware: str = "2.10"
    rebuild_priority: str = "high"
    cache: CacheSettings = field(default_factory=CacheSettings)

    def layout(self) -> tuple[list[ArraySpec], list[LogicalDriveSpec]]:
        if self.luns:
            arrays: list[ArraySpec] = []
            by_bay: dict[int, str] = {}
            for spec in sorted(self.luns, key=lambda s: s.bay):
                if spec.bay not in by_bay:
                    by_bay[spec.bay] = chr(ord("A") + len(arrays))
                    arrays.append(ArraySpec(by_bay[spec.bay], [spec.bay]))
            lds = [
                LogicalDriveSpec(s.lun, by_bay[s.bay], "0", s.size_bytes, s.name or f"Logical Drive {s.lun}")
                for s in self.luns
            ]
            return arrays, lds
        if self.arrays is None:
            return default_layout()
        return list(self.arrays), list(self.logical_drives or [])

    def validate(self) -> None:
        if len(self.drive_bytes) != BAY_COUNT:
            raise ShelfError(f"the shelf has {BAY_COUNT} bays, {len(self.drive_bytes)} drive sizes given")
        for bay, size in enumerate(self.drive_bytes, 1):
            if size and (size < METADATA_BYTES + 16 * MIB or size % BLOCK_SIZE):
                raise ShelfError(f"bay {bay}: drive size {size} too small or not a multiple of 512")
        _plan(self)


def default_layout() -> tuple[list[ArraySpec], list[LogicalDriveSpec]]:
    """Bays 1-2 RAID 1 array A (LUN 1 "boot", 8 GiB), bays 3-6 RAID 5 array B (LUN 2
    "data", 16 GiB, 64 KiB stripe), bay 7 online spare of A and B, bays 8-10 unassigned
    drives, bays 11-14 empty."""
    return (
        [ArraySpec("A", [1, 2], [7]), ArraySpec("B", [3, 4, 5, 6], [7])],
        [
            LogicalDriveSpec(1, "A", "1", 8 * GIB, "boot"),
            LogicalDriveSpec(2, "B", "5", 16 * GIB, "data", 64),
        ],
    )


@dataclass
class _PlannedLd:
    spec: LogicalDriveSpec
    level: RaidLevel
    stripe_unit: int
    base: int
    num_blocks: int


def _plan(spec: ShelfSpec) -> dict[str, list[_PlannedLd]]:
    """Check a spec's layout and place its logical drives; raise ShelfError on any problem."""
    arrays, lds = spec.layout()
    used: dict[int, str] = {}
    names: dict[str, ArraySpec] = {}
    for a in arrays:
        if not a.name or not a.name.isalpha() or a.name in names:
            raise ShelfError(f"array name {a.name!r} invalid or used twice")
        names[a.name] = a
        if not a.bays:
            raise ShelfError(f"array {a.name}: no bays")
        for bay in a.bays:
            if not 1 <= bay <= BAY_COUNT:
                raise ShelfError(f"array {a.name}: bay {bay} outside 1..{BAY_COUNT}")
            if not spec.drive_bytes[bay - 1]:
                raise ShelfError(f"array {a.name}: bay {bay} has no drive")
            if bay in used:
                raise ShelfError(f"bay {bay} is in arrays {used[bay]} and {a.name}")
            used[bay] = a.name
    for a in arrays:
        for bay in a.spares:
            if not 1 <= bay <= BAY_COUNT or not spec.drive_bytes[bay - 1]:
                raise ShelfError(f"array {a.name}: spare bay {bay} has no drive")
            if bay in used:
                raise ShelfError(f"array {a.name}: spare bay {bay} is an array member")
    luns: set[int] = set()
    placed: dict[str, list[_PlannedLd]] = {a.name: [] for a in arrays}
    free: dict[str, int] = {a.name: 0 for a in arrays}
    if len(lds) > MAX_LUNS:
        raise ShelfError(f"{len(lds)} logical drives; at most {MAX_LUNS}")
    for ld in lds:
        if not 1 <= ld.lun <= MAX_LUNS:
            raise ShelfError(f"logical drive LUN {ld.lun} outside 1..{MAX_LUNS}")
        if ld.lun in luns:
            raise ShelfError(f"LUN {ld.lun} defined twice")
        luns.add(ld.lun)
        found = names.get(ld.array)
        if found is None:
            raise ShelfError(f"LUN {ld.lun}: no array {ld.array!r}")
        a = found
        try:
            level = _level_for(parse_raid(ld.raid), len(a.bays))
            su = _stripe_unit(ld.stripe_kib, level, len(a.bays))
        except ControllerError as exc:
            raise ShelfError(f"LUN {ld.lun}: {exc}") from exc
        member_bytes = min(spec.drive_bytes[b - 1] for b in a.bays) - METADATA_BYTES
        room = member_bytes - free[a.name]
        if ld.size_bytes is None:
            size = capacity_bytes(level, len(a.bays), room, su) // BLOCK_SIZE * BLOCK_SIZE
        else:
            size = ld.size_bytes
        if size < 8 * BLOCK_SIZE or size % BLOCK_SIZE:
            raise ShelfError(f"LUN {ld.lun}: size {size} is not a whole number of blocks")
        need = Layout(level, len(a.bays), su).per_member_bytes(size)
        if need > room:
            raise ShelfError(
                f"LUN {ld.lun}: {size} bytes need {need} bytes per drive, array {a.name} has {room} left"
            )
        placed[a.name].append(_PlannedLd(ld, level, su, free[a.name], size // BLOCK_SIZE))
        free[a.name] += need
    return placed


def _level_for(level: RaidLevel, n: int) -> RaidLevel:
    """ACU naming: RAID 1 over more than two drives is RAID 1+0, 1+0 over two is RAID 1."""
    if level is RaidLevel.RAID1 and n > 2:
        level = RaidLevel.RAID10
    elif level is RaidLevel.RAID10 and n == 2:
        level = RaidLevel.RAID1
    try:
        validate_layout(level, n, 64 * KIB)
    except ValueError as exc:
        raise ControllerError(str(exc)) from exc
    return level


def _stripe_unit(stripe_kib: int | None, level: RaidLevel, n: int) -> int:
    kib = DEFAULT_STRIPE_KIB if stripe_kib is None else stripe_kib
    if kib not in STRIPE_KIB:
        raise ControllerError(f"stripe size {kib} KiB not one of {', '.join(map(str, STRIPE_KIB))}")
    return kib * KIB


# ---------------------------------------------------------------------------- runtime
class LdVolume:
    """What BlockUnit sees: the logical drive's RaidVolume, with RAID errors turned into sense."""

    def __init__(self, ctrl: Controller, ld: LogicalDrive) -> None:
        self.ctrl = ctrl
        self.ld = ld
        self.block_size = BLOCK_SIZE

    @property
    def num_blocks(self) -> int:
        return self.ld.cfg.num_blocks

    def read(self, lba: int, count: int) -> bytes:
        ld = self.ld
        if ld.state is UnitState.FAILED:
            raise unit_offline_sense()
        if ld.lost:
            first = ld.lost.first_in(lba, count)
            if first is not None:
                raise unrecovered_read(first)
        try:
            if ld.new_volume is not None and lba < ld.moved_blocks:
                split = min(lba + count, ld.moved_blocks)
                head = ld.new_volume.read(lba, split - lba)
                if split == lba + count:
                    return head
                return head + ld.volume.read(split, lba + count - split)
            return ld.volume.read(lba, count)
        except (UnrecoverableRead, VolumeFailed, DriveError) as exc:
            raise self._sense_for(exc) from None

    def _sense_for(self, exc: Exception) -> ScsiError:
        """The answer a host gets when the RAID engine gives up, after the controller notes it."""
        if isinstance(exc, UnrecoverableRead):
            self.ctrl._lost_found("a degraded read")
            return unrecovered_read(exc.lba)
        self.ctrl._io_failed(self.ld)
        return unit_failed_sense()

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        ld = self.ld
        if ld.state is UnitState.FAILED:
            raise unit_offline_sense()
        intents = self.ctrl.intents
        slot = intents.begin(ld.cfg.lun, lba, len(data) // BLOCK_SIZE)  # before any member is touched
        self.ctrl._intent_slot = slot
        try:
            if ld.new_volume is not None and lba < ld.moved_blocks:
                count = len(data) // BLOCK_SIZE
                split = min(lba + count, ld.moved_blocks)
                mv = memoryview(data)
                ld.new_volume.write(lba, mv[: (split - lba) * BLOCK_SIZE])
                if split < lba + count:
                    ld.volume.write(split, mv[(split - lba) * BLOCK_SIZE :])
            else:
                ld.volume.write(lba, data)
        except (UnrecoverableRead, VolumeFailed, DriveError) as exc:
            self.ctrl._intent_slot = -1
            self.ctrl._resync_after(ld, lba, len(data) // BLOCK_SIZE)  # what the write left half done
            intents.end(slot)
            raise self._sense_for(exc) from None
        finally:
            self.ctrl._intent_slot = -1
        # any other failure (the drive images' file system full...) keeps its record: the rows it
        # may have left half written are made consistent at the next start
        intents.end(slot)
        ctrl = self.ctrl
        if ctrl._lost_pending:
            ctrl._lost_found("a write to the same stripe row")
        if ld.lost:
            ctrl._lost_healed(ld, lba, len(data) // BLOCK_SIZE)
        if ctrl._pending_member_errors:
            ctrl._handle_member_errors()

    def flush(self) -> None:
        self.ld.volume.flush()
        if self.ld.new_volume is not None:
            self.ld.new_volume.flush()


class LogicalDrive:
    def __init__(self, cfg: LdConfig) -> None:
        self.cfg = cfg
        self.volume: RaidVolume = None  # type: ignore[assignment]  # set by the controller
        self.new_volume: RaidVolume | None = None  # expansion: the new layout below moved_blocks
        self.moved_blocks = 0
        self.state = UnitState.OK
        self.lost = LostBlocks(cfg.lost)
        self.unit: BlockUnit | None = None
        self.view: LdVolume | None = None

    @property
    def level(self) -> RaidLevel:
        return RaidLevel(self.cfg.raid)

    @property
    def stripe_unit(self) -> int:
        return self.cfg.stripe_kib * KIB

    @property
    def size_bytes(self) -> int:
        return self.cfg.num_blocks * BLOCK_SIZE

    def per_member(self, n_members: int | None = None) -> int:
        n = n_members if n_members is not None else len(self.volume.members)
        return Layout(self.level, n, self.stripe_unit).per_member_bytes(self.size_bytes)


class ArrayRt:
    def __init__(self, cfg: ArrayConfig, members: list[Drive]) -> None:
        self.cfg = cfg
        self.members = members  # shared by reference with every RaidVolume of the array
        self.rebuild_pct = -1  # last 10% step reported for the current rebuild
        self.expand_pct = -1
        self.copy_target: Drive | None = None  # the replacement drive a copy-back fills from its spare

    @property
    def name(self) -> str:
        return self.cfg.name


class _JournalView:
    """One logical drive's view of the member journal: member slots named by drive serial."""

    def __init__(self, journal: MemberJournal, lun: int, members: list[Drive]) -> None:
        self._journal = journal
        self._lun = lun
        self._members = members  # the array's list, by reference

    def record(self, writes: list[MemberWrite]) -> None:
        self._journal.record(self._lun, [(self._members[m].serial, off, data) for m, off, data in writes])

    def clear(self) -> None:
        self._journal.clear()


@dataclass
class _MemberErr:
    array: str
    slot: int
    error: DriveError


class _Replay:
    """The old layout of an expansion step, answering reads from the step's saved data."""

    def __init__(self, old: RaidVolume, start: int, data: bytes) -> None:
        self._old = old
        self._start = start
        self._data = data
        self.block_size = old.block_size
        self.num_blocks = old.num_blocks
        self.base_offset = old.base_offset
        self.stripe_unit = old.stripe_unit
        self.layout = old.layout
        self.per_member_bytes = old.per_member_bytes
        self.size_bytes = old.size_bytes

    def read(self, lba: int, count: int) -> bytes:
        a = (lba - self._start) * self.block_size
        if a < 0 or a + count * self.block_size > len(self._data):
            return self._old.read(lba, count)
        return self._data[a : a + count * self.block_size]


# --------------------------------------------------------------------------- controller
class Controller:
    """Opens (or builds) the shelf in a state directory and serves it through `controller`.

    `controller` is the ScsiTarget (LUN 0 and the logical drives); `identity` its names.
    """

    def __init__(
        self,
        state_dir: Path,
        spec: ShelfSpec | None = None,
        clock: Clock | None = None,
        *,
        wall: Callable[[], float] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.spec = spec if spec is not None else ShelfSpec()
        self.log = EventLog(self.state_dir / EVENTS_FILE, self.clock, wall or time.time, subscriber=on_event)
        self.nvram_path = self.state_dir / NVRAM_FILE
        self.enclosure = Enclosure(self.state_dir)
        self.enclosure.on_remap = self._media_remapped
        self.arrays: dict[str, ArrayRt] = {}
        self.lds: dict[int, LogicalDrive] = {}
        self.cfg: ShelfConfig
        self.next_drive = 1
        self._next_step = 0.0
        self._steps_since_save = 0
        self._pending_member_errors: list[_MemberErr] = []
        self._lost_pending: list[tuple[int, int, int]] = []  # (lun, lba, count) not yet in the event log
        self._intent_slot = -1  # the write-intent record of the host write under way
        self._closed = False
        nvram = self._load_nvram()
        # Recovery Server Option: settings and fence from NVRAM, wired to the log and the ALUA gate.
        self.rso = Rso(self.clock, on_event=self._rso_event, on_change=self._rso_changed)
        self.rso.load((nvram or {}).get("rso"))
        self._open_cache(nvram)
        self.intents = IntentLog(self.state_dir)
        self.member_journal = MemberJournal(self.state_dir)
        self._open(nvram)
        self._recover_interrupted_writes()
        serial = self.cfg.serial
        target_name = f"iqn.2003-04.com.hp:msa500.{serial.lower()}"
        self.identity = TargetIdentity(
            target_name=target_name,
            serial=serial,
            product=self.cfg.product,
            revision=self.cfg.firmware,
            port_names={p: f"{target_name},t,0x{p:04x}" for p in range(1, PORT_COUNT + 1)},
        )
        self.controller = ScsiTarget(self.identity, self.clock)
        self.target = self.controller
        lun0 = ControllerUnit(serial, product=self.identity.product)
        register_rso_commands(lun0, self.rso, host_event=self._rso_event)
        self.controller.add_lun(0, lun0)
        self.controller.nexus_observer = self._rso_nexus
        for lun in sorted(self.lds):
            self._attach_unit(self.lds[lun])
        self._refresh(quiet=True)
        self._replay_cache()  # before any logical drive answers a command
        self._apply_cache_mode(quiet=True)
        self._activate_spares()  # commits: a new generation on every drive
        self.controller.power_on()
        self.controller.set_port_states(self.rso.port_states())
        self.log.emit(EventCode.CONTROLLER_STARTED, f"MSA500 {serial} firmware {self.cfg.firmware} started")

    # ============================================================ start-up
    def _load_nvram(self) -> dict[str, Any] | None:
        if not self.nvram_path.exists():
            return None
        try:
            data = json.loads(self.nvram_path.read_text())
        except (OSError, ValueError) as exc:
            raise ShelfError(f"controller NVRAM {self.nvram_path} unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") not in (1, NVRAM_FORMAT):
            raise ShelfError(f"controller NVRAM {self.nvram_path} has an unknown format")
        from .nvram_check import NvramError, check_nvram, check_v1  # (local: this method's own check)

        try:  # valid JSON of the wrong shape: refused here, naming the key, before anyone reads it
            if data["format"] == 1:
                check_v1(data)
            else:
                check_nvram(data, [p.value for p in RebuildPriority])
        except NvramError as exc:
            raise ShelfError(f"controller NVRAM {self.nvram_path}: {exc}") from exc
        return data

    def _open(self, nvram: dict[str, Any] | None) -> None:
        # (Wired here, right after the cache opened, so replaying it already reports.) The drive
        # images' file system refusing the cache's writes (ENOSPC) is no loss: the data stays in
        # the battery-backed cache; an event when it starts and when the writes go through again.
        def no_space(lun: int, exc: OSError | None) -> None:
            if exc is None:
                self.log.emit(EventCode.STORAGE_AVAILABLE, f"LUN {lun}: the cache writes to the drive "
                              "images again", lun=lun)
                return
            try:
                st = os.statvfs(self.state_dir)
                free = f"{st.f_bavail * st.f_frsize // MIB} MiB free"
            except OSError:
                free = "free space unknown"
            self.log.emit(EventCode.STORAGE_FULL, f"LUN {lun}: cannot write to the drive images in "
                          f"{self.state_dir} ({exc.strerror}, {free}): destage blocked; unwritten data "
                          f"stays in the battery-backed cache until space returns "
                          f"({self.cache.dirty_bytes // BLOCK_SIZE} blocks now)", lun=lun)

        self.cache.on_no_space = no_space
        drives = self.enclosure.scan()
        if nvram is not None:
            self.next_drive = int(nvram.get("next_drive", 1))
        candidates: list[tuple[int, int, ShelfConfig]] = []
        if nvram is not None and nvram.get("format") == NVRAM_FORMAT:
            try:
                candidates.append((ShelfConfig.from_dict(nvram["config"]).generation, 1,
                                   ShelfConfig.from_dict(nvram["config"])))
            except (KeyError, TypeError, ValueError, AttributeError, MetadataError) as exc:
                raise ShelfError(f"controller NVRAM {self.nvram_path}: {exc}") from exc
        for d in drives:
            if d.present:
                rec = d.read_record()
                if rec is not None and rec.config is not None:
                    candidates.append((rec.config.generation, 0, rec.config))
        if candidates:
            candidates.sort(key=lambda c: (c[0], c[1]))
            self.cfg = candidates[-1][2]
            try:
                self._restore(nvram)
            except (KeyError, TypeError, ValueError, IndexError) as exc:  # parts that do not fit together
                src = f"controller NVRAM {self.nvram_path}" if candidates[-1][1] else "the drives' metadata"
                raise ShelfError(f"configuration generation {self.cfg.generation} from {src} cannot be "
                                 f"restored: {type(exc).__name__}: {exc}") from exc
            self.log.emit(EventCode.CONFIG_RESTORED,
                          f"configuration generation {self.cfg.generation} restored: "
                          f"{len(self.arrays)} arrays, {len(self.lds)} logical drives")
        elif nvram is not None and nvram.get("format") == 1:
            self._migrate_v1(nvram)
        else:
            self._build(self.spec)

    def _new_serial(self) -> str:
        taken = {d.serial for d in self.enclosure.present()} | set(self.enclosure.aside)
        while True:
            serial = f"3HX{self.cfg.serial[-4:].upper()}{self.next_drive:05d}"
            self.next_drive += 1
            if serial not in taken:
                return serial

    def _identify_blank(self, drive: Drive) -> None:
        """Give a factory-fresh drive a serial and WWID (its vendor identity) and record it."""
        if not drive.serial:
            drive.serial = self._new_serial()
        if not drive.wwid:
            drive.wwid = naa5("drive:" + drive.serial)
        drive.write_record(DriveRecord(drive.serial, drive.wwid, drive.size_bytes, None))

    def _build(self, spec: ShelfSpec) -> None:
        try:
            spec.validate()
        except ShelfError:
            raise
        plan = _plan(spec)
        self.cfg = ShelfConfig(serial=spec.serial, product=spec.product, firmware=spec.firmware,
                               rebuild_priority=RebuildPriority(spec.rebuild_priority).value)
        for bay, size in enumerate(spec.drive_bytes, 1):
            if size:
                old = self.enclosure.bays.get(bay)
                if old is not None:  # a stale image without any configuration: start over
                    self.enclosure.discard(bay)
                d = self.enclosure.new_drive(bay, size, "", 0)
                self._identify_blank(d)
        arrays, _ = spec.layout()
        for a in arrays:
            members = [self._bay_drive(b) for b in a.bays]
            acfg = ArrayConfig(a.name, [d.serial for d in members], list(a.bays),
                               min(d.data_bytes for d in members),
                               [self._bay_drive(b).serial for b in a.spares])
            self.cfg.arrays.append(acfg)
            self.arrays[a.name] = ArrayRt(acfg, members)
            for p in plan[a.name]:
                ldc = LdConfig(p.spec.lun, p.spec.name or f"Logical Drive {p.spec.lun}", a.name,
                               p.level.value, p.stripe_unit // KIB, p.base, p.num_blocks)
                self.cfg.lds.append(ldc)
                ld = LogicalDrive(ldc)
                self.lds[ldc.lun] = ld
                self._make_volume(ld)
        self.log.emit(EventCode.CONFIG_CREATED,
                      f"new shelf {spec.serial}: {len(self.arrays)} arrays, {len(self.lds)} logical drives")

    def _migrate_v1(self, nvram: dict[str, Any]) -> None:
        """The foundation's NVRAM: each LUN straight on one bay = single-drive RAID 0 arrays."""
        luns = [LunSpec(**raw) for raw in nvram.get("luns", [])]
        spec = ShelfSpec(serial=str(nvram["serial"]), drive_bytes=[int(x) for x in nvram["drive_bytes"]],
                         luns=luns, product=str(nvram.get("product", "MSA500")),
                         firmware=str(nvram.get("firmware", "2.10")))
        plan = _plan(spec)
        self.cfg = ShelfConfig(serial=spec.serial, product=spec.product, firmware=spec.firmware)
        for bay, size in enumerate(spec.drive_bytes, 1):
            d = self.enclosure.bays.get(bay)
            if d is None and size:
                d = self.enclosure.new_drive(bay, size, "", 0)
            if d is not None and d.blank:
                self._identify_blank(d)
        arrays, _ = spec.layout()
        for a in arrays:
            members = [self._bay_drive(b) for b in a.bays]
            acfg = ArrayConfig(a.name, [d.serial for d in members], list(a.bays),
                               min(d.data_bytes for d in members))
            self.cfg.arrays.append(acfg)
            self.arrays[a.name] = ArrayRt(acfg, members)
            for p in plan[a.name]:
                ldc = LdConfig(p.spec.lun, p.spec.name, a.name, RaidLevel.RAID0.value,
                               p.stripe_unit // KIB, p.base, p.num_blocks)
                self.cfg.lds.append(ldc)
                self.lds[ldc.lun] = LogicalDrive(ldc)
                self._make_volume(self.lds[ldc.lun])
        self.log.emit(EventCode.CONFIG_RESTORED, "foundation NVRAM migrated: one RAID 0 array per bay")

    def _bay_drive(self, bay: int) -> Drive:
        d = self.enclosure.bays.get(bay)
        if d is None:
            raise ShelfError(f"bay {bay} has no drive")
        return d

    def _restore(self, nvram: dict[str, Any] | None) -> None:
        cfg = self.cfg
        failed = set(cfg.failed)
        faults = (nvram or {}).get("faults", {}) if nvram else {}
        for d in self.enclosure.present():
            if d.blank:
                self._identify_blank(d)
        for d in [*self.enclosure.present(), *self.enclosure.aside.values()]:
            d.failed = d.serial in failed
            f = faults.get(d.serial)
            if f:
                d.latency_ms = float(f.get("latency_ms", 0.0))
                d.predictive = bool(f.get("predictive", False))
                for off, length in f.get("media_errors", []):
                    d.add_media_error(int(off), int(length))
        if nvram is not None:
            env = nvram.get("enclosure", {})
            self.enclosure.psus = [ComponentState(s) for s in env.get("psus", ["ok"] * PSU_COUNT)]
            self.enclosure.fans = [ComponentState(s) for s in env.get("fans", ["ok"] * FAN_COUNT)]
            self.enclosure.temperature_c = float(env.get("temperature_c", self.enclosure.temperature_c))
        for acfg in cfg.arrays:
            members: list[Drive] = []
            for i, serial in enumerate(acfg.members):
                found = self.enclosure.find(serial)
                if found is not None:
                    d = found
                else:  # gone for good: a placeholder keeps the slot failed
                    d = Drive(self.state_dir / f"absent-{serial}.img", serial, naa5("drive:" + serial),
                              acfg.member_bytes + METADATA_BYTES)
                    d.blank = False
                if serial in cfg.rebuilding:
                    d.member_state = MemberState.REBUILDING
                    # NVRAM is written every few steps; the mapped watermark after every one
                    d.rebuilt_to = max(cfg.rebuilding[serial], self.intents.mark(serial) or 0)
                if d.bay is not None and d.bay != acfg.home_bays[i]:
                    self.log.emit(EventCode.DRIVE_MOVED,
                                  f"drive {serial} of array {acfg.name} found in bay {d.bay} "
                                  f"(was bay {acfg.home_bays[i]})", bay=d.bay, array=acfg.name)
                    acfg.home_bays[i] = d.bay
                members.append(d)
            self.arrays[acfg.name] = ArrayRt(acfg, members)
        for ldc in cfg.lds:
            ld = LogicalDrive(ldc)
            self.lds[ldc.lun] = ld
            self._make_volume(ld)
        for arr in self.arrays.values():
            if arr.cfg.expand is not None:
                self._resume_expand(arr)
            if arr.cfg.copyback:
                target = self.enclosure.find(arr.cfg.copyback)
                slot = arr.cfg.copyback_slot
                if (target is not None and target.present and not target.failed and 0 <= slot < len(arr.members)
                        and arr.members[slot].serial in arr.cfg.spares):
                    self._begin_copyback(arr, slot, target, max(cfg.rebuilding.get(target.serial, 0),
                                                                self.intents.mark(target.serial) or 0))
                else:
                    arr.cfg.copyback, arr.cfg.copyback_slot = "", -1

    def _recover_interrupted_writes(self) -> None:
        """Writes under way when the process stopped: apply a complete member journal again, and
        make the rows of every other interrupted write consistent from their data."""
        replayed: set[int] = set()
        journal = self.member_journal.pending()
        if journal is not None:
            lun, writes = journal
            for serial, off, data in writes:
                d = self.enclosure.find(serial)
                if d is not None and d.present and not d.failed:
                    try:
                        d.write(off, data)
                    except (DriveError, OSError):
                        pass  # that drive fails at its next use
            self.member_journal.clear()
            replayed.add(lun)
        intents = self.intents.pending()
        for lun, lba, count, row in intents:
            ld = self.lds.get(lun)
            if ld is None or ld.cfg.failed or lun in replayed or lba + count > ld.cfg.num_blocks:
                continue
            if row == NO_ROW:
                continue  # it had touched no member: its rows hold what they held
            if row is None:
                self._resync_after(ld, lba, count)  # how far it got is unknown: all its rows
                continue
            start, end = row[0] & ~NEW_LAYOUT, row[1]
            vol = ld.new_volume if row[0] & NEW_LAYOUT and ld.new_volume is not None else ld.volume
            self._resync_rows(vol, ld, [(start - vol.base_offset, end - vol.base_offset)])
        self.intents.clear()
        if journal is not None or intents:
            self.log.emit(EventCode.WRITES_RECOVERED,
                          f"{len(intents)} writes interrupted by the stop made consistent"
                          + (f" ({len(journal[1])} journalled member writes applied again)" if journal else ""),
                          severity=Severity.INFO)
        if self._lost_pending:
            self._lost_found("the recovery of writes interrupted by the stop")

    def _resync_after(self, ld: LogicalDrive, lba: int, count: int) -> None:
        """Recompute the redundancy of the rows that logical blocks [lba, lba+count) touch."""
        parts = [(ld.volume, lba, count)]
        if ld.new_volume is not None and lba < ld.moved_blocks:
            split = min(lba + count, ld.moved_blocks)
            parts = [(ld.new_volume, lba, split - lba)] + ([(ld.volume, split, lba + count - split)]
                                                           if split < lba + count else [])
        for vol, a, n in parts:
            # exactly the member rows the write touched (a row elsewhere keeps its trusted parity)
            rows: list[list[int]] = []
            for pc in sorted(vol.layout.pieces(a * BLOCK_SIZE, n * BLOCK_SIZE), key=lambda p: p.member_offset):
                if rows and pc.member_offset <= rows[-1][1]:
                    rows[-1][1] = max(rows[-1][1], pc.member_offset + pc.length)
                else:
                    rows.append([pc.member_offset, pc.member_offset + pc.length])
            self._resync_rows(vol, ld, [(lo, hi) for lo, hi in rows])

    def _resync_rows(self, vol: RaidVolume, ld: LogicalDrive, rows: list[tuple[int, int]]) -> None:
        """Recompute the redundancy of extent rows [lo, hi) of `vol` from their data alone."""
        copy_target = self.arrays[ld.cfg.array].copy_target
        for lo, hi in rows:
            if not 0 <= lo < hi <= vol.per_member_bytes:
                continue
            try:
                resync_untrusted(vol, lo, hi - lo)
            except (VolumeFailed, DriveError):
                break  # the unit has failed: nothing to keep consistent
            if copy_target is not None:  # the spare and its copy may disagree there: copy again
                copy_target.rebuilt_to = min(copy_target.rebuilt_to, vol.base_offset + lo)
                self.intents.set_mark(copy_target.serial, copy_target.rebuilt_to)

    # ============================================================ volumes and units
    def _make_volume(self, ld: LogicalDrive) -> None:
        arr = self.arrays[ld.cfg.array]
        exp = arr.cfg.expand
        members = arr.members
        ld.new_volume = None
        ld.moved_blocks = 0
        if exp is not None:
            el = next((x for x in exp.lds if x.lun == ld.cfg.lun), None)
            if el is not None and not el.done:
                old = members[: exp.old_count]
                ld.volume = self._raid(arr, RaidLevel(el.old_raid), old, ld, el.old_base)
                if el.watermark > 0:
                    ld.new_volume = self._raid(arr, RaidLevel(el.new_raid), members, ld, el.new_base)
                    ld.moved_blocks = el.watermark // BLOCK_SIZE
                return
        ld.volume = self._raid(arr, ld.level, members, ld, ld.cfg.base_offset)

    def _raid(self, arr: ArrayRt, level: RaidLevel, members: list[Drive], ld: LogicalDrive,
              base: int) -> RaidVolume:
        name = arr.name

        def on_error(slot: int, err: DriveError) -> None:
            self._pending_member_errors.append(_MemberErr(name, slot, err))

        def on_lost(lba: int, count: int) -> None:
            if ld.lost.add(lba, count):
                self._lost_pending.append((ld.cfg.lun, lba, count))
                self._save_nvram()  # before the engine settles the blocks (see RaidVolume._settle)

        vol = RaidVolume(level, members, ld.stripe_unit, ld.cfg.num_blocks,  # type: ignore[arg-type]
                         BLOCK_SIZE, base, on_member_error=on_error, on_lost=on_lost)
        vol.journal = _JournalView(self.member_journal, ld.cfg.lun, members)
        vol.on_row = lambda start, end: self.intents.row(self._intent_slot, start, end, vol is ld.new_volume)
        return vol

    def _attach_unit(self, ld: LogicalDrive) -> None:
        ld.view = LdVolume(self, ld)
        serial = self.cfg.serial
        ld.unit = BlockUnit(CachedVolume(self.cache, ld.cfg.lun, ld.view),
                            ld.cfg.name or f"Logical Drive {ld.cfg.lun}",
                            f"{serial}L{ld.cfg.lun:02d}", cache_bytes=self.cache.slots * 4096)
        if not self.cache.write_back:
            ld.unit.mode.set_write_cache_available(False)
        self.controller.add_lun(ld.cfg.lun, ld.unit)

    # ============================================================ states
    def _ld_state(self, ld: LogicalDrive, arr: ArrayRt) -> UnitState:
        if ld.cfg.failed:
            return UnitState.FAILED
        vols = [ld.volume] + ([ld.new_volume] if ld.new_volume is not None else [])
        st = "ok"
        for v in vols:
            s = v.state()
            if s == "failed":
                return UnitState.FAILED
            if s == "degraded":
                st = "degraded"
        exp = arr.cfg.expand
        if exp is not None:
            # members beyond the old ones are not in the old view: count them too
            extra = arr.members[exp.old_count :]
            if any(d.state is not MemberState.OK for d in extra):
                st = "degraded"
        if st == "degraded":
            if any(d.state is MemberState.FAILED for d in arr.members):
                return UnitState.INTERIM_RECOVERY
            return UnitState.REBUILDING
        if exp is not None:
            return UnitState.EXPANDING
        return UnitState.OK

    def _refresh(self, quiet: bool = False) -> bool:
        """Recompute every logical drive's state; log and flag changes. True if any changed."""
        changed = False
        for lun in sorted(self.lds):
            ld = self.lds[lun]
            arr = self.arrays[ld.cfg.array]
            new = self._ld_state(ld, arr)
            if new is UnitState.FAILED and not ld.cfg.failed:
                ld.cfg.failed = True
                changed = True
            if ld.unit is not None:
                ld.unit.not_ready_reason = self._not_ready(new)
            if new is not ld.state:
                old = ld.state
                ld.state = new
                if not quiet:
                    if new is UnitState.FAILED:
                        self.log.emit(EventCode.UNIT_FAILED,
                                      f"logical drive {lun} ({ld.cfg.name}) failed: too many drives of "
                                      f"array {arr.name} lost", lun=lun, array=arr.name)
                    else:
                        sev = Severity.INFO if new in (UnitState.OK, UnitState.EXPANDING) else Severity.WARNING
                        self.log.emit(EventCode.UNIT_STATUS,
                                      f"logical drive {lun} status {old.value} -> {new.value}",
                                      lun=lun, array=arr.name, severity=sev)
                changed = True
        return changed

    # ============================================================ persistence
    def _snapshot(self) -> ShelfConfig:
        cfg = self.cfg
        cfg.rebuilding = {}
        failed: set[str] = set()
        for arr in self.arrays.values():
            for d in arr.members:
                if d.member_state is MemberState.REBUILDING and not d.failed:
                    cfg.rebuilding[d.serial] = d.rebuilt_to
            if arr.copy_target is not None:
                cfg.rebuilding[arr.copy_target.serial] = arr.copy_target.rebuilt_to
        for d in [*self.enclosure.present(), *self.enclosure.aside.values()]:
            if d.failed:
                failed.add(d.serial)
        for arr in self.arrays.values():
            for d in arr.members:
                if d.failed:
                    failed.add(d.serial)
        cfg.failed = sorted(failed)
        return cfg

    def _commit(self) -> None:
        """A configuration change: new generation on every working drive and in NVRAM."""
        cfg = self._snapshot()
        cfg.generation += 1
        for d in self.enclosure.present():
            if not d.failed:
                d.write_record(DriveRecord(d.serial, d.wwid, d.size_bytes, cfg))
        self._save_nvram()

    def _save_nvram(self) -> None:
        cfg = self._snapshot()
        faults: dict[str, Any] = {}
        for d in [*self.enclosure.present(), *self.enclosure.aside.values()]:
            if d.media_errors or d.latency_ms or d.predictive:
                faults[d.serial] = {
                    "media_errors": [[e.offset, e.length] for e in d.media_errors],
                    "latency_ms": d.latency_ms,
                    "predictive": d.predictive,
                }
        data = {
            "format": NVRAM_FORMAT,
            "serial": cfg.serial,
            "product": cfg.product,
            "firmware": cfg.firmware,
            "next_drive": self.next_drive,
            "enclosure": {
                "psus": [s.value for s in self.enclosure.psus],
                "fans": [s.value for s in self.enclosure.fans],
                "temperature_c": self.enclosure.temperature_c,
            },
            "faults": faults,
            "config": cfg.to_dict(),
            "cache": self.cache_cfg.to_dict(),
            "battery": self.battery.to_dict(self.clock.now()),
            "rso": self.rso.to_dict(),
        }
        tmp = self.nvram_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.nvram_path)

    # ============================================================ drive events
    def _array_of(self, drive: Drive) -> tuple[ArrayRt, int] | None:
        for arr in self.arrays.values():
            for i, d in enumerate(arr.members):
                if d is drive or (d.serial == drive.serial and drive.serial):
                    return arr, i
        return None

    def _spare_arrays(self, serial: str) -> list[str]:
        return [a.name for a in self.arrays.values() if serial in a.cfg.spares]

    def _drive_lost(self, drive: Drive) -> None:
        """A drive failed or was pulled: degrade, fail or activate a spare."""
        for arr in self.arrays.values():
            if arr.copy_target is drive:
                self._end_copyback(arr, f"drive {drive.serial} is gone")
            elif arr.copy_target is not None and arr.members[arr.cfg.copyback_slot] is drive:
                # the spare went: what the new drive already holds is a rebuild begun
                target, slot = arr.copy_target, arr.cfg.copyback_slot
                self._end_copyback(arr, f"spare {drive.serial} is gone; rebuilding onto drive {target.serial}",
                                   keep_target=True)
                arr.members[slot] = target
                arr.cfg.members[slot] = target.serial
                self._remake(arr)
                self._rebuild_started(arr, target)
        hit = self._array_of(drive)
        if hit is not None:
            arr = hit[0]
            if drive.member_state is MemberState.REBUILDING:
                self.log.emit(EventCode.REBUILD_ABORTED,
                              f"rebuild of array {arr.name} onto drive {drive.serial} stopped: the drive is gone",
                              array=arr.name, bay=drive.bay)
                drive.member_state = MemberState.OK
                drive.rebuilt_to = 0
        self._refresh()
        self._activate_spares()

    def _handle_member_errors(self) -> None:
        """Members that failed a write during host I/O: mark them failed (Smart Array does)."""
        errs, self._pending_member_errors = self._pending_member_errors, []
        for e in errs:
            arr = self.arrays.get(e.array)
            if arr is None or e.slot >= len(arr.members):
                continue
            d = arr.members[e.slot]
            if d.present and not d.failed:
                d.failed = True
                self.log.emit(EventCode.DRIVE_FAILED,
                              f"drive {d.serial} in bay {d.bay} failed a write ({e.error.why})",
                              bay=d.bay, array=arr.name)
                self._drive_lost(d)
        self._commit()

    def _io_failed(self, ld: LogicalDrive) -> None:
        if self._pending_member_errors:
            self._handle_member_errors()
        if self._refresh():
            self._commit()

    def _lost_found(self, during: str) -> None:
        """Log the blocks the RAID engine just recorded as lost (one event per range) and keep
        the list in NVRAM with the rest of the configuration."""
        pending, self._lost_pending = self._lost_pending, []
        if pending:
            spans: dict[int, list[tuple[int, int]]] = {}
            for lun, lba, n in sorted(pending):
                runs = spans.setdefault(lun, [])
                if runs and lba <= runs[-1][1]:
                    runs[-1] = (runs[-1][0], max(runs[-1][1], lba + n))
                else:
                    runs.append((lba, lba + n))
            for lun, runs in spans.items():
                ld = self.lds[lun]
                shown = runs[:8]
                more = f" and {len(runs) - 8} more ranges" if len(runs) > 8 else ""
                self.log.emit(EventCode.BLOCKS_LOST,
                              f"logical drive {lun}: "
                              + ", ".join(f"LBA {a}-{b - 1} ({b - a} blocks)" for a, b in shown) + more
                              + f" could not be reconstructed during {during}; they read as MEDIUM ERROR "
                              f"until written ({ld.lost.total} lost blocks in all)",
                              lun=lun, array=ld.cfg.array)
            self._save_nvram()
        if self._pending_member_errors:
            self._handle_member_errors()

    def _media_remapped(self, drive: Drive) -> None:
        """A write remapped media errors of a drive: keep the smaller fault list now, before the
        data lands, or a restart would bring the error back over the new data."""
        if not self._closed and hasattr(self, "cfg"):
            self._save_nvram()

    def _lost_healed(self, ld: LogicalDrive, lba: int, count: int) -> None:
        healed = ld.lost.heal(lba, count)
        if healed:
            self.log.emit(EventCode.BLOCKS_HEALED,
                          f"logical drive {ld.cfg.lun}: {healed} lost blocks in LBA {lba}-{lba + count - 1} "
                          f"written again ({ld.lost.total} lost blocks remain)",
                          lun=ld.cfg.lun, array=ld.cfg.array, severity=Severity.INFO)
            self._save_nvram()

    def _usable_spare(self, arr: ArrayRt) -> Drive | None:
        in_use = {d.serial for a in self.arrays.values() for d in a.members}
        for serial in arr.cfg.spares:
            d = self.enclosure.find(serial)
            if (d is not None and d.present and not d.failed and serial not in in_use
                    and d.data_bytes >= arr.cfg.member_bytes):
                return d
        return None

    def _activate_spares(self) -> None:
        for arr in self.arrays.values():
            if arr.cfg.expand is not None:
                continue  # Smart Array finishes the expansion first
            for slot, d in enumerate(arr.members):
                if d.state is not MemberState.FAILED:
                    continue
                lds = [ld for ld in self.lds.values() if ld.cfg.array == arr.name and not ld.cfg.failed]
                if not any(ld.level is not RaidLevel.RAID0 for ld in lds):
                    continue  # nothing that a rebuild could save
                spare = self._usable_spare(arr)
                if spare is None:
                    continue
                self._slot_replaced(arr)
                arr.members[slot] = spare
                arr.cfg.members[slot] = spare.serial
                spare.member_state = MemberState.REBUILDING
                spare.rebuilt_to = 0
                arr.rebuild_pct = -1
                self.log.emit(EventCode.SPARE_ACTIVATED,
                              f"spare {spare.serial} in bay {spare.bay} replaces drive {d.serial} "
                              f"(bay {arr.cfg.home_bays[slot]}) in array {arr.name}",
                              bay=spare.bay, array=arr.name)
                self._remake(arr)
                self._rebuild_started(arr, spare)
        self._refresh()
        self._commit()

    def _slot_replaced(self, arr: ArrayRt) -> None:
        """A failed member's slot goes to another drive: a failed unit that cannot be rebuilt
        (RAID 0) has lost that drive's part for good and never re-enables by itself."""
        for ld in self._extents(arr):
            if ld.cfg.failed and ld.level is RaidLevel.RAID0:
                ld.cfg.gone = True

    def _remake(self, arr: ArrayRt) -> None:
        """New RaidVolumes after a member slot changed hands."""
        for ld in self._extents(arr):
            self._make_volume(ld)

    def _rebuild_started(self, arr: ArrayRt, drive: Drive) -> None:
        arr.rebuild_pct = 0
        self.intents.set_mark(drive.serial, drive.rebuilt_to)
        self.log.emit(EventCode.REBUILD_STARTED,
                      f"array {arr.name}: rebuilding onto drive {drive.serial} in bay {drive.bay}",
                      bay=drive.bay, array=arr.name)
        if self._next_step < self.clock.now():
            self._next_step = self.clock.now()

    def _drive_arrived(self, drive: Drive, blank: bool) -> None:
        """A drive was inserted: rebuild onto it, take it back, or leave it unassigned."""
        bay = drive.bay
        assert bay is not None
        if blank:
            self._identify_blank(drive)
            for arr in self.arrays.values():
                if arr.cfg.expand is not None:
                    continue
                for slot, d in enumerate(arr.members):
                    if arr.cfg.home_bays[slot] != bay:
                        continue
                    spare_held = d.bay != bay and d.serial in arr.cfg.spares and d.state is not MemberState.FAILED
                    if spare_held:  # the spare keeps the slot until the new drive holds everything
                        self._start_copybacks()
                        return
                    if d.state is MemberState.FAILED:
                        if drive.data_bytes < arr.cfg.member_bytes:
                            return
                        self._slot_replaced(arr)
                        arr.members[slot] = drive
                        arr.cfg.members[slot] = drive.serial
                        drive.member_state = MemberState.REBUILDING
                        drive.rebuilt_to = 0
                        arr.rebuild_pct = -1
                        self._remake(arr)
                        self._rebuild_started(arr, drive)
                        return
            return
        hit = self._array_of(drive)
        if hit is None:
            self._start_copybacks()  # a configured drive back in its bay, or any drive: replaces a spare
        if hit is not None:
            arr, slot = hit
            arr.members[slot] = drive
            arr.cfg.home_bays[slot] = bay
            self._remake(arr)
            if drive.failed:
                return
            lds = [ld for ld in self.lds.values() if ld.cfg.array == arr.name]
            redundant = [ld for ld in lds if not ld.cfg.failed and ld.level is not RaidLevel.RAID0]
            if redundant:
                drive.member_state = MemberState.REBUILDING  # written meanwhile: bring it up to date
                drive.rebuilt_to = 0
                arr.rebuild_pct = -1
                self._rebuild_started(arr, drive)
            else:
                drive.member_state = MemberState.OK
                drive.rebuilt_to = 0
                for ld in lds:  # the drive came back: re-enable the RAID 0 units it took down, whose data
                    # it holds unchanged; a failed redundant unit stays failed (its spare may hold nothing)
                    # (not while the array expands: part of its data may be in the new layout's lost drives)
                    if ld.cfg.failed and ld.level is RaidLevel.RAID0 and not ld.cfg.gone and arr.cfg.expand is None:
                        self._make_volume(ld)
                        if ld.volume.state() != "failed":
                            ld.cfg.failed = False
                            self.log.emit(EventCode.UNIT_STATUS,
                                          f"logical drive {ld.cfg.lun} re-enabled: drive {drive.serial} is back",
                                          lun=ld.cfg.lun, array=arr.name, severity=Severity.INFO)

    # ============================================================ background work
    def next_deadline(self) -> float | None:
        """When `advance` next has work to do (None: nothing pending)."""
        if self._closed or not self._powered:
            return None
        due: list[float] = []
        if self._has_work():
            due.append(self._next_step)
        d = self.cache.next_deadline()
        if d is not None:
            due.append(d)
        d = self.battery.next_change(self.clock.now())
        if d is not None:
            due.append(d)
        if self._spinup_until is not None:
            due.append(self._spinup_until)
        d = self.rso.next_deadline()
        if d is not None:
            due.append(d)
        return min(due) if due else None

    def _has_work(self) -> bool:
        for arr in self.arrays.values():
            if (arr.cfg.expand is not None or self._rebuilding_slot(arr) is not None
                    or arr.copy_target is not None):
                return True
        return False

    @staticmethod
    def _rebuilding_slot(arr: ArrayRt) -> int | None:
        """The member being rebuilt (one at a time; none while the array expands)."""
        if arr.cfg.expand is not None:
            return None
        for slot, d in enumerate(arr.members):
            if d.member_state is MemberState.REBUILDING and d.state is MemberState.REBUILDING:
                return slot
        return None

    def advance(self, now: float) -> None:
        """Run the background steps due by `now` (a bounded amount of work per call)."""
        if self._closed or not self._powered:
            return
        self.rso.advance(now)
        self._cache_advance(now)
        chunk, interval, max_steps = PACE[RebuildPriority(self.cfg.rebuild_priority)]
        steps = 0
        while steps < max_steps and now >= self._next_step and self._has_work():
            self._step(chunk)
            steps += 1
            self._next_step = now + interval
        if steps and self._steps_since_save >= 16:
            self._save_nvram()
            self._steps_since_save = 0

    def _step(self, chunk: int) -> None:
        for arr in self.arrays.values():
            slot = self._rebuilding_slot(arr)
            if slot is not None:
                self._rebuild_step(arr, slot, arr.members[slot], chunk)
                return
        for arr in self.arrays.values():
            if arr.copy_target is not None:
                self._copyback_step(arr, chunk)
                return
        for arr in self.arrays.values():
            if arr.cfg.expand is not None:
                self._expand_step(arr, chunk)
                return

    def _extents(self, arr: ArrayRt) -> list[LogicalDrive]:
        return sorted((ld for ld in self.lds.values() if ld.cfg.array == arr.name),
                      key=lambda ld: ld.cfg.base_offset)

    def _rebuild_step(self, arr: ArrayRt, slot: int, drive: Drive, chunk: int) -> None:
        pos = drive.rebuilt_to
        lds = self._extents(arr)
        end = max((ld.cfg.base_offset + ld.volume.per_member_bytes for ld in lds), default=0)
        target: LogicalDrive | None = None
        for ld in lds:
            if ld.cfg.base_offset + ld.volume.per_member_bytes > pos:
                target = ld
                break
        if target is None:
            self._rebuild_done(arr, drive)
            return
        base = target.cfg.base_offset
        if pos < base:
            pos = base  # free space between extents: nothing to rebuild
        stop = base + target.volume.per_member_bytes
        n = min(chunk, stop - pos)
        if target.cfg.failed or target.level is RaidLevel.RAID0:
            n = stop - pos  # its data is gone anyway
        else:
            others = [d for i, d in enumerate(arr.members) if i != slot and d.state is not MemberState.FAILED]
            try:
                if not any(d.has_data(pos, n) for d in others):
                    drive.discard(pos, n)  # all holes: the rebuilt content is zeros
                else:
                    target.volume.rebuild_region(slot, pos - base, n)
                    if self._lost_pending:
                        self._lost_found(f"the rebuild onto drive {drive.serial} in bay {drive.bay}")
            except VolumeFailed:
                self._refresh()
                n = stop - pos
            except DriveError as exc:
                # the drive being rebuilt failed a write: it is failed
                drive.failed = True
                self.log.emit(EventCode.DRIVE_FAILED, f"drive {drive.serial} failed during rebuild ({exc.why})",
                              bay=drive.bay, array=arr.name)
                self._drive_lost(drive)
                return
        drive.rebuilt_to = pos + n
        self.intents.set_mark(drive.serial, drive.rebuilt_to)
        self._steps_since_save += 1
        pct = min(99, drive.rebuilt_to * 100 // max(1, end)) // 10 * 10
        if pct > arr.rebuild_pct and drive.rebuilt_to < end:
            if arr.rebuild_pct >= 0 and pct > 0:
                self.log.emit(EventCode.REBUILD_PROGRESS,
                              f"array {arr.name}: rebuild of drive {drive.serial} {pct}% done",
                              bay=drive.bay, array=arr.name)
            arr.rebuild_pct = pct
        if drive.rebuilt_to >= end:
            self._rebuild_done(arr, drive)

    def _rebuild_done(self, arr: ArrayRt, drive: Drive) -> None:
        self.intents.drop_mark(drive.serial)
        drive.member_state = MemberState.OK
        drive.rebuilt_to = 0
        arr.rebuild_pct = -1
        self.log.emit(EventCode.REBUILD_DONE, f"array {arr.name}: rebuild of drive {drive.serial} in bay "
                      f"{drive.bay} complete", bay=drive.bay, array=arr.name)
        self._refresh()
        self._activate_spares()  # commits
        self._start_copybacks()

    def rebuild_progress(self, arr: ArrayRt) -> int | None:
        slot = self._rebuilding_slot(arr)
        if slot is None:
            return None
        return min(99, arr.members[slot].rebuilt_to * 100 // max(1, self._array_end(arr.name)))

    # ------------------------------------------------------------------ copy-back
    def _start_copybacks(self) -> None:
        """A usable drive in the home bay of a slot a spare holds: fill it from the spare (one
        copy-back per array at a time, after any rebuild of that spare)."""
        taken = {d.serial for a in self.arrays.values() for d in a.members}
        taken |= {a.copy_target.serial for a in self.arrays.values() if a.copy_target is not None}
        taken |= {s for a in self.arrays.values() for s in a.cfg.spares}
        for arr in self.arrays.values():
            if arr.copy_target is not None or arr.cfg.expand is not None:
                continue
            for slot, spare in enumerate(arr.members):
                bay = arr.cfg.home_bays[slot]
                if spare.bay == bay or spare.serial not in arr.cfg.spares or spare.state is not MemberState.OK:
                    continue
                d = self.enclosure.bays.get(bay)
                if d is None or d.failed or d.serial in taken or d.data_bytes < arr.cfg.member_bytes:
                    continue
                self._begin_copyback(arr, slot, d, 0)
                self.log.emit(EventCode.COPY_BACK_STARTED,
                              f"array {arr.name}: copying spare {spare.serial} (bay {spare.bay}) back onto drive "
                              f"{d.serial} in bay {bay}; the spare stays in the array until it is done",
                              bay=bay, array=arr.name)
                self._commit()
                break

    def _begin_copyback(self, arr: ArrayRt, slot: int, drive: Drive, watermark: int) -> None:
        arr.copy_target = drive
        arr.cfg.copyback, arr.cfg.copyback_slot = drive.serial, slot
        drive.member_state = MemberState.REBUILDING
        drive.rebuilt_to = watermark
        self.intents.set_mark(drive.serial, watermark)
        drive.copy_broken = False
        arr.members[slot].copy_to = drive  # from now on every write to the spare reaches the new drive too
        arr.rebuild_pct = -1
        if self._next_step < self.clock.now():
            self._next_step = self.clock.now()

    def _end_copyback(self, arr: ArrayRt, why: str | None, keep_target: bool = False) -> None:
        target = arr.copy_target
        assert target is not None
        spare = arr.members[arr.cfg.copyback_slot]
        spare.copy_to = None
        arr.copy_target = None
        arr.cfg.copyback, arr.cfg.copyback_slot = "", -1
        arr.rebuild_pct = -1
        self.intents.drop_mark(target.serial)
        if not keep_target:
            target.member_state = MemberState.OK
            target.rebuilt_to = 0
        if why is not None:
            self.log.emit(EventCode.COPY_BACK_ABORTED, f"array {arr.name}: copy-back onto drive {target.serial} "
                          f"stopped: {why}", bay=target.bay, array=arr.name)

    def _copyback_step(self, arr: ArrayRt, chunk: int) -> None:
        """Copy the next chunk of the spare onto the replacement; at the end, swap them."""
        target = arr.copy_target
        assert target is not None
        slot = arr.cfg.copyback_slot
        spare = arr.members[slot]
        if target.copy_broken:
            target.failed = True
            self.log.emit(EventCode.DRIVE_FAILED, f"drive {target.serial} in bay {target.bay} failed a write "
                          "during copy-back", bay=target.bay, array=arr.name)
            self._end_copyback(arr, f"drive {target.serial} failed")
            self._commit()
            return
        pos = target.rebuilt_to
        end = self._array_end(arr.name)
        n = min(chunk, end - pos)
        if n > 0:
            try:
                if spare.has_data(pos, n):
                    target.write(pos, spare.read(pos, n))
                else:
                    target.discard(pos, n)
            except DriveError:
                # the spare cannot give it: let redundancy rebuild the spare's range (the
                # rewrite reaches the new drive through the spare), block by block if need be
                self._copy_through_redundancy(arr, slot, pos, n)
                if target.copy_broken or arr.copy_target is None:
                    return
            target.rebuilt_to = pos + n
            self.intents.set_mark(target.serial, target.rebuilt_to)
            self._steps_since_save += 1
        if target.rebuilt_to >= end:
            self._end_copyback(arr, None, keep_target=True)
            target.member_state = MemberState.OK
            target.rebuilt_to = 0
            arr.members[slot] = target
            arr.cfg.members[slot] = target.serial
            spare.member_state = MemberState.OK
            spare.rebuilt_to = 0
            self._remake(arr)
            self.log.emit(EventCode.COPY_BACK_DONE, f"array {arr.name}: drive {target.serial} in bay {target.bay} "
                          f"holds its data again", bay=target.bay, array=arr.name)
            self.log.emit(EventCode.SPARE_RELEASED, f"spare {spare.serial} in bay {spare.bay} returns to standby",
                          bay=spare.bay, array=arr.name)
            self._refresh()
            self._activate_spares()  # commits; the freed spare may stand in for another failed drive
            self._start_copybacks()

    def _copy_through_redundancy(self, arr: ArrayRt, slot: int, pos: int, n: int) -> None:
        spare = arr.members[slot]
        for ld in self._extents(arr):
            base, size = ld.cfg.base_offset, ld.volume.per_member_bytes
            a, b = max(pos, base), min(pos + n, base + size)
            if a >= b or ld.cfg.failed:
                continue
            try:
                ld.volume.rebuild_region(slot, a - base, b - a)
            except VolumeFailed:
                # no redundancy left (the spare is the only copy): copy what reads, the rest is lost
                for o in range(a, b, BLOCK_SIZE):
                    try:
                        spare.write(o, spare.read(o, BLOCK_SIZE))
                    except DriveError:
                        ld.volume.note_member_lost(slot, o - base, BLOCK_SIZE)  # recorded first
                        spare.write(o, bytes(BLOCK_SIZE))  # remaps; reaches the new drive too
            if self._lost_pending:
                self._lost_found(f"the copy-back onto drive {arr.copy_target.serial if arr.copy_target else '?'}")

    # ------------------------------------------------------------------ expansion
    def _resume_expand(self, arr: ArrayRt) -> None:
        """After a restart: replay the step that was under way when the emulator stopped."""
        path = self.state_dir / JOURNAL_FILE
        if not path.exists():
            return
        raw = path.read_bytes()
        path.unlink()
        if len(raw) < 24:
            return
        name_b, lun, start, end = struct.unpack_from(">4sIQQ", raw)
        if name_b.rstrip(b"\0").decode() != arr.name or arr.cfg.expand is None:
            return
        el = next((x for x in arr.cfg.expand.lds if x.lun == lun and not x.done), None)
        if el is None or el.watermark != start * BLOCK_SIZE:
            return
        data = raw[28:]
        if len(data) != (end - start) * BLOCK_SIZE:
            return
        ld = self.lds[lun]
        self._make_volume(ld)
        new = self._raid(arr, RaidLevel(el.new_raid), arr.members, ld, el.new_base)
        try:
            moved = restripe(cast(RaidVolume, _Replay(ld.volume, start, data)), new, start, end - start)
        except (VolumeFailed, DriveError):
            return  # the new layout lost a drive meanwhile: the step did not happen; the next one says so
        el.watermark = moved * BLOCK_SIZE
        self._make_volume(ld)

    def _expand_step(self, arr: ArrayRt, chunk: int) -> None:
        exp = arr.cfg.expand
        assert exp is not None
        el = next((x for x in exp.lds if not x.done), None)
        if el is None:
            self._expand_done(arr)
            return
        ld = self.lds[el.lun]
        if ld.cfg.failed:
            self.log.emit(EventCode.UNIT_STATUS,
                          f"logical drive {ld.cfg.lun} failed during expansion; its data is not moved",
                          lun=ld.cfg.lun, array=arr.name, severity=Severity.CRITICAL)
            el.done = True
            ld.cfg.base_offset = el.new_base
            ld.cfg.raid = el.new_raid
            self._make_volume(ld)
            self._save_nvram()
            return
        old = ld.volume
        new = ld.new_volume or self._raid(arr, RaidLevel(el.new_raid), arr.members, ld, el.new_base)
        start = el.watermark // BLOCK_SIZE
        total = ld.cfg.num_blocks
        want = max(chunk // BLOCK_SIZE, 1)
        while True:
            try:
                data_end = self._restripe(arr, ld, old, new, start, want)
                break
            except ValueError:
                if start + want >= total:
                    raise
                want *= 2
            except VolumeFailed:  # the new layout lost more members than it survives
                self._expansion_lost_drives(arr, ld)
                return
        el.watermark = data_end * BLOCK_SIZE
        ld.new_volume = new
        ld.moved_blocks = data_end
        pct = min(99, int(self._expand_fraction(arr) * 100)) // 10 * 10
        if pct > arr.expand_pct and data_end < total:
            if arr.expand_pct >= 0 and pct > 0:
                self.log.emit(EventCode.EXPAND_PROGRESS, f"array {arr.name}: expansion {pct}% done",
                              array=arr.name)
            arr.expand_pct = pct
        if data_end >= total:
            el.done = True
            ld.cfg.base_offset = el.new_base
            ld.cfg.raid = el.new_raid
            self._make_volume(ld)
            if all(x.done for x in exp.lds):
                self._expand_done(arr)
                return
        self._save_nvram()

    def _restripe(self, arr: ArrayRt, ld: LogicalDrive, old: RaidVolume, new: RaidVolume,
                  start: int, want: int) -> int:
        """One expansion step, journalled: the moved data is kept in the state directory until
        the new watermark is in NVRAM (the battery-backed cache's job on the real controller)."""
        per = new.layout.stripe_data_bytes // BLOCK_SIZE
        end = min(ld.cfg.num_blocks, start + max(1, want // per) * per)
        if not restripe_safe(old, new, start, end):
            raise ValueError("step too small to stay clear of unmoved data")
        data = old.read_salvaged(start, end - start)
        if self._lost_pending:
            self._lost_found(f"the expansion of array {arr.name}")
        journal = self.state_dir / JOURNAL_FILE
        journal.write_bytes(struct.pack(">4sIQQ", arr.name.encode()[:4].ljust(4, b"\0"), ld.cfg.lun, start, end)
                            + bytes(4) + data)
        try:
            done = restripe(cast(RaidVolume, _Replay(old, start, data)), new, start, end - start)
        except Exception:
            # the step failed (the new layout lost a drive): the watermark stays, reads keep using
            # the old layout, and a journal left behind would be replayed into a later expansion
            journal.unlink()
            raise
        journal.unlink()  # kept if the process died in the step: the next start replays it
        return done

    def _expansion_lost_drives(self, arr: ArrayRt, ld: LogicalDrive) -> None:
        """An expansion whose new layout cannot go on (e.g. RAID 0 losing an added drive): with
        nothing moved yet it is called off and the array keeps its old members; otherwise the
        logical drive being moved, split between two layouts, has failed."""
        exp = arr.cfg.expand
        assert exp is not None
        if any(x.done or x.watermark for x in exp.lds):
            ld.cfg.failed = True
            self._refresh()
            self._commit()
            return
        extra = arr.members[exp.old_count :]
        del arr.members[exp.old_count :]
        del arr.cfg.members[exp.old_count :]
        del arr.cfg.home_bays[exp.old_count :]
        arr.cfg.expand = None
        arr.expand_pct = -1
        for d in extra:
            d.member_state = MemberState.OK
            d.rebuilt_to = 0
        for x in self._extents(arr):
            self._make_volume(x)
        self.log.emit(EventCode.EXPAND_ABORTED,
                      f"array {arr.name}: expansion called off before any data moved (an added drive is gone); "
                      f"the array keeps bays {', '.join(map(str, self._member_bays(arr)))}",
                      array=arr.name, severity=Severity.WARNING)
        self._refresh()
        self._commit()
        self._activate_spares()

    def _expand_fraction(self, arr: ArrayRt) -> float:
        exp = arr.cfg.expand
        if exp is None:
            return 1.0
        total = sum(self.lds[x.lun].size_bytes for x in exp.lds) or 1
        done = sum(self.lds[x.lun].size_bytes if x.done else x.watermark for x in exp.lds)
        return done / total

    def _expand_done(self, arr: ArrayRt) -> None:
        arr.cfg.expand = None
        arr.expand_pct = -1
        for ld in self._extents(arr):
            self._make_volume(ld)
        self.log.emit(EventCode.EXPAND_DONE,
                      f"array {arr.name} now spans bays {', '.join(map(str, self._member_bays(arr)))}",
                      array=arr.name)
        self._refresh()
        self._activate_spares()

    # ============================================================ views
    def _member_bays(self, arr: ArrayRt) -> list[int | None]:
        return [d.bay for d in arr.members]

    def describe(self) -> dict[str, Any]:
        """The SHOW GLOBALS facts."""
        enc = self.enclosure
        present = enc.present()
        return {
            "product": self.identity.product,
            "serial": self.identity.serial,
            "firmware": self.identity.revision,
            "target_name": self.identity.target_name,
            "cache_bytes": self.cache.slots * 4096,
            "bays": BAY_COUNT,
            "ports": PORT_COUNT,
            "drives": len(present),
            "arrays": len(self.arrays),
            "logical_drive_count": len(self.lds),
            "temperature_c": enc.temperature_c,
            "power_supplies": [s.value for s in enc.psus],
            "fans": [s.value for s in enc.fans],
            "rebuild_priority": self.cfg.rebuild_priority,
            "generation": self.cfg.generation,
            "logical_drives": [
                {"lun": lun, "blocks": ld.cfg.num_blocks, "block_size": BLOCK_SIZE,
                 "bytes": ld.size_bytes, "state": ld.state.value}
                for lun, ld in sorted(self.lds.items())
            ],
            "state_dir": str(self.state_dir),
            "powered": self._powered,
            "cache": self.cache_stats(),
            "battery": self.battery.describe(self.clock.now()),
            "rso": self.rso.status(),
        }

    def _role(self, d: Drive) -> tuple[str, str | None]:
        hit = self._array_of(d)
        if hit is not None:
            return "member", hit[0].name
        for arr in self.arrays.values():
            if arr.copy_target is d:
                return "member", arr.name  # taking its slot back from the spare
            if d.failed and d.bay is not None:
                # a failed drive whose slot a spare holds is still a (failed) member of its array
                for slot, m in enumerate(arr.members):
                    if arr.cfg.home_bays[slot] == d.bay and m.bay != d.bay:
                        return "member", arr.name
        spares = self._spare_arrays(d.serial)
        if spares:
            return "spare", ",".join(spares)
        return "unassigned", None

    def _drive_state(self, d: Drive, role: str) -> DriveState:
        if d.failed:
            return DriveState.FAILED
        if not d.present:
            return DriveState.MISSING
        if d.member_state is MemberState.REBUILDING and role == "member":
            return DriveState.REBUILDING
        if d.predictive:
            return DriveState.PREDICTIVE
        if role == "spare":
            return DriveState.SPARE
        return DriveState.OK

    def disks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        missing: dict[int, Drive] = {}
        for arr in self.arrays.values():
            for i, d in enumerate(arr.members):
                if not d.present:
                    missing.setdefault(arr.cfg.home_bays[i], d)
        for bay in range(1, BAY_COUNT + 1):
            found = self.enclosure.bays[bay] or missing.get(bay)
            if found is None:
                out.append({"bay": bay, "state": "empty"})
                continue
            d = found
            role, array = self._role(d)
            out.append({
                "bay": bay,
                "state": self._drive_state(d, role).value,
                "size_bytes": d.size_bytes,
                "serial": d.serial,
                "wwid": f"{d.wwid:016x}",
                "role": role,
                "array": array,
                "media_errors": [
                    {"lba": e.offset // BLOCK_SIZE, "count": e.length // BLOCK_SIZE} for e in d.media_errors
                ],
                "latency_ms": d.latency_ms,
                "rebuild_percent": (min(99, d.rebuilt_to * 100 // max(1, self._array_end(array)))
                                    if role == "member" and array and d.member_state is MemberState.REBUILDING
                                    else None),
            })
        return out

    def _array_end(self, name: str) -> int:
        arr = self.arrays.get(name)
        if arr is None:
            return 1
        return max((ld.cfg.base_offset + ld.volume.per_member_bytes for ld in self._extents(arr)), default=1)

    def units(self) -> list[dict[str, Any]]:
        out = []
        for lun in sorted(self.lds):
            ld = self.lds[lun]
            arr = self.arrays[ld.cfg.array]
            rebuild = self.rebuild_progress(arr)
            expand = (min(99, int(self._expand_fraction(arr) * 100)) if arr.cfg.expand is not None else None)
            out.append({
                "lun": lun,
                "name": ld.cfg.name,
                "array": arr.name,
                "raid": raid_label(ld.level),
                "stripe_kib": ld.cfg.stripe_kib,
                "size_bytes": ld.size_bytes,
                "blocks": ld.cfg.num_blocks,
                "block_size": BLOCK_SIZE,
                "state": ld.state.value,
                "rebuild_percent": rebuild if ld.state is UnitState.REBUILDING else None,
                "expand_percent": expand,
                "fault_tolerance": 0 if ld.state is UnitState.FAILED else ld.volume.fault_tolerance(),
                "lost_blocks": ld.lost.total,
                "bays": self._member_bays(arr),
                "spares": [self._spare_bay(s) for s in arr.cfg.spares],
                "base_offset": ld.cfg.base_offset,
                "powered": self._powered,  # off: the unit answers hosts NOT READY, whatever its state
            })
        return out

    def _spare_bay(self, serial: str) -> int | None:
        d = self.enclosure.find(serial)
        return d.bay if d is not None else None

    def spares(self) -> list[dict[str, Any]]:
        out = []
        serials: list[str] = []
        for arr in self.arrays.values():
            for s in arr.cfg.spares:
                if s not in serials:
                    serials.append(s)
        in_use = {d.serial: a.name for a in self.arrays.values() for d in a.members}
        for s in serials:
            d = self.enclosure.find(s)
            out.append({
                "serial": s,
                "bay": d.bay if d is not None else None,
                "arrays": self._spare_arrays(s),
                "luns": sorted(ld.cfg.lun for ld in self.lds.values() if s in self.arrays[ld.cfg.array].cfg.spares),
                "state": ("missing" if d is None or not d.present else "failed" if d.failed
                          else "active" if s in in_use else "standby"),
                "replacing_in": in_use.get(s),
            })
        return out

    def events(self, since_id: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return self.log.events(since_id, limit)

    # ============================================================ operations
    def _ld(self, lun: int) -> LogicalDrive:
        if not isinstance(lun, int) or lun not in self.lds:
            raise ControllerError(f"no logical drive with LUN {lun}")
        return self.lds[lun]

    def _bays_drives(self, bays: list[int], what: str) -> list[Drive]:
        if not bays:
            raise ControllerError(f"{what}: no bays given")
        if len(set(bays)) != len(bays):
            raise ControllerError(f"{what}: a bay is named twice")
        out = []
        for bay in bays:
            if not isinstance(bay, int) or not 1 <= bay <= BAY_COUNT:
                raise ControllerError(f"{what}: bay {bay} outside 1..{BAY_COUNT}")
            d = self.enclosure.bays[bay]
            if d is None:
                raise ControllerError(f"{what}: bay {bay} is empty")
            if d.failed:
                raise ControllerError(f"{what}: the drive in bay {bay} has failed")
            out.append(d)
        return out

    def _unassigned(self, drives: list[Drive], what: str, spares_ok: bool = False) -> None:
        for d in drives:
            role, array = self._role(d)
            if role == "member" or (role == "spare" and not spares_ok):
                raise ControllerError(f"{what}: the drive in bay {d.bay} is already a {role} of array {array}")

    def _next_array_name(self) -> str:
        for i in range(26):
            name = chr(ord("A") + i)
            if name not in self.arrays:
                return name
        raise ControllerError("no array name left (A-Z all in use)")

    def _free_extent(self, arr: ArrayRt) -> list[tuple[int, int]]:
        """Free (start, length) runs of each member's data area, in order."""
        runs = []
        pos = 0
        for ld in self._extents(arr):
            if ld.cfg.base_offset > pos:
                runs.append((pos, ld.cfg.base_offset - pos))
            pos = max(pos, ld.cfg.base_offset + ld.volume.per_member_bytes)
        if arr.cfg.member_bytes > pos:
            runs.append((pos, arr.cfg.member_bytes - pos))
        return runs

    def _zero(self, arr: ArrayRt, start: int, length: int) -> None:
        """Zero a member range on every working member: data and parity consistent (all zero)."""
        for d in arr.members:
            if d.present and not d.failed and length > 0:
                d.discard(start, length)

    def add_unit(self, lun: int, bays: list[int] | None = None, raid: str | int = "5",
                 stripe_kib: int | None = None, size_bytes: int | None = None,
                 name: str | None = None, array: str | None = None) -> dict[str, Any]:
        """Create logical drive `lun`: on a new array of unassigned `bays`, or on the free space
        of an existing array (`array` given, or `bays` equal to its members)."""
        if not isinstance(lun, int) or not 1 <= lun <= MAX_LUNS:
            raise ControllerError(f"LUN {lun} outside 1..{MAX_LUNS}")
        if lun in self.lds:
            raise ControllerError(f"LUN {lun} is already in use")
        if len(self.lds) >= MAX_LUNS:
            raise ControllerError(f"the controller already has {MAX_LUNS} logical drives")
        level = parse_raid(raid)
        if name is not None and (len(name) > 64 or not name.isprintable()):
            raise ControllerError("name: at most 64 printable characters")
        arr: ArrayRt | None = None
        if array is not None:
            arr = self.arrays.get(str(array).upper())
            if arr is None:
                raise ControllerError(f"no array {array}")
            if bays and sorted(bays) != sorted(b for b in self._member_bays(arr) if b is not None):
                raise ControllerError(f"bays {bays} are not the members of array {arr.name}")
        elif bays:
            for a in self.arrays.values():
                if sorted(bays) == sorted(b for b in self._member_bays(a) if b is not None):
                    arr = a
                    break
        new_drives: list[Drive] = []
        if arr is None:
            new_drives = self._bays_drives(list(bays or []), "add unit")
            self._unassigned(new_drives, "add unit")
            n = len(new_drives)
        else:
            if arr.cfg.expand is not None:
                raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
            n = len(arr.members)
        level = _level_for(level, n)
        su = _stripe_unit(stripe_kib, level, n)
        if arr is None:
            member_bytes = min(d.data_bytes for d in new_drives)
            runs = [(0, member_bytes)]
        else:
            member_bytes = arr.cfg.member_bytes
            runs = self._free_extent(arr)
        layout = Layout(level, n, su)
        if size_bytes is None:
            if not runs:
                raise ControllerError(f"array {arr.name if arr else '?'} has no free space")
            start, room = max(runs, key=lambda r: r[1])
            size = capacity_bytes(level, n, room, su) // BLOCK_SIZE * BLOCK_SIZE
            if size < 8 * BLOCK_SIZE:
                raise ControllerError("not enough free space for a logical drive")
        else:
            if not isinstance(size_bytes, int) or size_bytes < 8 * BLOCK_SIZE or size_bytes % BLOCK_SIZE:
                raise ControllerError(f"size {size_bytes}: a whole number of 512-byte blocks, at least 4 KiB")
            size = size_bytes
            need = layout.per_member_bytes(size)
            fit = [r for r in runs if r[1] >= need]
            if not fit:
                most = max((capacity_bytes(level, n, r[1], su) for r in runs), default=0)
                raise ControllerError(f"{size} bytes do not fit: at most {most} bytes free at RAID "
                                      f"{raid_label(level)}")
            start = fit[0][0]
        if arr is None:
            aname = self._next_array_name()
            acfg = ArrayConfig(aname, [d.serial for d in new_drives], [d.bay or 0 for d in new_drives],
                               member_bytes)
            self.cfg.arrays.append(acfg)
            arr = ArrayRt(acfg, new_drives)
            self.arrays[aname] = arr
            for d in new_drives:
                d.member_state = MemberState.OK
                d.rebuilt_to = 0
        ldc = LdConfig(lun, name or f"Logical Drive {lun}", arr.name, level.value, su // KIB, start,
                       size // BLOCK_SIZE)
        ld = LogicalDrive(ldc)
        self.cfg.lds.append(ldc)
        self.lds[lun] = ld
        self._make_volume(ld)
        self._zero(arr, start, ld.volume.per_member_bytes)
        self.cache.drop_lun(lun)  # nothing of an earlier logical drive with this LUN
        self._attach_unit(ld)
        self.log.emit(EventCode.UNIT_CREATED,
                      f"logical drive {lun} ({ldc.name}): RAID {raid_label(level)}, {size} bytes, stripe "
                      f"{ldc.stripe_kib} KiB on array {arr.name}", lun=lun, array=arr.name)
        self._refresh(quiet=True)
        self._commit()
        return next(u for u in self.units() if u["lun"] == lun)

    def delete_unit(self, lun: int) -> None:
        ld = self._ld(lun)
        arr = self.arrays[ld.cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
        self.controller.remove_lun(lun)
        self.cache.detach(lun)
        del self.lds[lun]
        self.cfg.lds = [x for x in self.cfg.lds if x.lun != lun]
        self.log.emit(EventCode.UNIT_DELETED, f"logical drive {lun} ({ld.cfg.name}) deleted",
                      lun=lun, array=arr.name)
        if not any(x.cfg.array == arr.name for x in self.lds.values()):
            for d in arr.members:
                d.member_state = MemberState.OK
                d.rebuilt_to = 0
            del self.arrays[arr.name]
            self.cfg.arrays = [a for a in self.cfg.arrays if a.name != arr.name]
            self.log.emit(EventCode.CONFIG_CHANGED, f"array {arr.name} deleted with its last logical drive",
                          array=arr.name)
        self._commit()

    def add_spare(self, lun: int, bays: list[int]) -> None:
        """Assign the drives in `bays` as online spares of the array that holds `lun`."""
        arr = self.arrays[self._ld(lun).cfg.array]
        drives = self._bays_drives(bays, "add spare")
        self._unassigned(drives, "add spare", spares_ok=True)
        for d in drives:
            if d.data_bytes < arr.cfg.member_bytes:
                raise ControllerError(f"the drive in bay {d.bay} is smaller than the members of array {arr.name}")
            if d.serial in arr.cfg.spares:
                raise ControllerError(f"the drive in bay {d.bay} is already a spare of array {arr.name}")
        for d in drives:
            arr.cfg.spares.append(d.serial)
            self.log.emit(EventCode.SPARE_ADDED, f"drive {d.serial} in bay {d.bay} is a spare of array {arr.name}",
                          bay=d.bay, array=arr.name)
        self._activate_spares()

    def delete_spare(self, lun: int, bays: list[int]) -> None:
        arr = self.arrays[self._ld(lun).cfg.array]
        if not bays:
            raise ControllerError("delete spare: no bays given")
        serials = []
        for bay in bays:
            d = self.enclosure.bays.get(bay) if isinstance(bay, int) else None
            if d is None or d.serial not in arr.cfg.spares:
                raise ControllerError(f"bay {bay} holds no spare of array {arr.name}")
            serials.append(d.serial)
        for s in serials:
            arr.cfg.spares.remove(s)
            self.log.emit(EventCode.SPARE_REMOVED, f"drive {s} is no longer a spare of array {arr.name}",
                          bay=self._spare_bay(s), array=arr.name)
        self._commit()

    def expand_unit(self, lun: int, bays: list[int]) -> None:
        """Array capacity expansion: restripe every logical drive of `lun`'s array onto `bays` too."""
        arr = self.arrays[self._ld(lun).cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is already expanding")
        drives = self._bays_drives(bays, "expand")
        self._unassigned(drives, "expand")
        for d in arr.members:
            if d.state is not MemberState.OK:
                raise ControllerError(f"array {arr.name} is not healthy (drive {d.serial} is "
                                      f"{'rebuilding' if d.state is MemberState.REBUILDING else 'failed'})")
        for d in drives:
            if d.data_bytes < arr.cfg.member_bytes:
                raise ControllerError(f"the drive in bay {d.bay} is smaller than the members of array {arr.name}")
        lds = self._extents(arr)
        if any(ld.cfg.failed for ld in lds):
            raise ControllerError(f"array {arr.name} holds a failed logical drive")
        old_n = len(arr.members)
        new_n = old_n + len(drives)
        plan: list[ExpandLd] = []
        base = 0
        for ld in lds:
            new_level = ld.level
            if new_level is RaidLevel.RAID1:
                new_level = RaidLevel.RAID10
            try:
                validate_layout(new_level, new_n, ld.stripe_unit)
            except ValueError as exc:
                raise ControllerError(f"logical drive {ld.cfg.lun}: {exc}") from exc
            new_pm = Layout(new_level, new_n, ld.stripe_unit).per_member_bytes(ld.size_bytes)
            if data_members(new_level, new_n) <= data_members(ld.level, old_n):
                raise ControllerError(f"logical drive {ld.cfg.lun}: RAID {raid_label(new_level)} gains no "
                                      "capacity from these drives")
            plan.append(ExpandLd(ld.cfg.lun, ld.level.value, new_level.value, ld.cfg.base_offset, base))
            base += new_pm
        for d in drives:
            d.member_state = MemberState.OK
            d.rebuilt_to = 0
            d.discard(0, arr.cfg.member_bytes)
        arr.members.extend(drives)
        arr.cfg.members.extend(d.serial for d in drives)
        arr.cfg.home_bays.extend(d.bay or 0 for d in drives)
        arr.cfg.expand = ExpandConfig(old_n, plan)
        arr.expand_pct = 0
        for ld in lds:
            self._make_volume(ld)
        self.log.emit(EventCode.EXPAND_STARTED,
                      f"array {arr.name}: expanding onto bays {', '.join(map(str, bays))}", array=arr.name)
        self._refresh()
        self._commit()
        if self._next_step < self.clock.now():
            self._next_step = self.clock.now()

    def extend_unit(self, lun: int, size_bytes: int) -> None:
        """Grow logical drive `lun` into the free space that follows it on its array."""
        ld = self._ld(lun)
        arr = self.arrays[ld.cfg.array]
        if arr.cfg.expand is not None:
            raise ControllerError(f"array {arr.name} is expanding; wait until it completes")
        if ld.state is UnitState.FAILED:
            raise ControllerError(f"logical drive {lun} has failed")
        if not isinstance(size_bytes, int) or size_bytes % BLOCK_SIZE:
            raise ControllerError(f"size {size_bytes}: a whole number of 512-byte blocks")
        if size_bytes <= ld.size_bytes:
            raise ControllerError(f"size {size_bytes} is not larger than the current {ld.size_bytes} bytes")
        n = len(arr.members)
        base = ld.cfg.base_offset
        old_pm = ld.volume.per_member_bytes
        new_pm = Layout(ld.level, n, ld.stripe_unit).per_member_bytes(size_bytes)
        limit = arr.cfg.member_bytes
        for other in self._extents(arr):
            if other.cfg.base_offset > base:
                limit = min(limit, other.cfg.base_offset)
        if base + new_pm > limit:
            most = capacity_bytes(ld.level, n, limit - base, ld.stripe_unit) // BLOCK_SIZE * BLOCK_SIZE
            raise ControllerError(f"logical drive {lun} can grow to at most {most} bytes on array {arr.name}")
        self._zero(arr, base + old_pm, new_pm - old_pm)
        old = ld.size_bytes
        ld.cfg.num_blocks = size_bytes // BLOCK_SIZE
        self._make_volume(ld)
        # the unused tail of the old last stripe holds whatever was there (an expansion's old
        # layout, a deleted unit): the new blocks there must read as zeros, parity included
        old_blocks = old // BLOCK_SIZE
        tail_end = min(ld.cfg.num_blocks, -(-old // ld.volume.layout.stripe_data_bytes)
                       * ld.volume.layout.stripe_data_bytes // BLOCK_SIZE)
        if tail_end > old_blocks:
            ld.volume.write(old_blocks, bytes((tail_end - old_blocks) * BLOCK_SIZE))
        self.controller.establish_unit_attention(lun, CAPACITY_DATA_HAS_CHANGED)
        self.log.emit(EventCode.UNIT_EXTENDED, f"logical drive {lun} grew from {old} to {size_bytes} bytes",
                      lun=lun, array=arr.name)
        self._commit()

    def set_rebuild_priority(self, priority: str) -> None:
        try:
            p = RebuildPriority(str(priority).lower())
        except ValueError:
            raise ControllerError(f"rebuild priority {priority!r}: high, medium or low") from None
        if p.value != self.cfg.rebuild_priority:
            self.cfg.rebuild_priority = p.value
            self.log.emit(EventCode.REBUILD_PRIORITY, f"rebuild priority set to {p.value}")
            self._commit()

    def fault_disk(self, bay: int, action: str, **kw: Any) -> dict[str, Any]:
        """Inject a drive fault: fail, pull, insert, media-error, latency, predictive, clear.

        insert: `serial` (a pulled drive), `new=True` (a blank drive; `size_bytes` to choose its
        size), default: the drive last pulled from this bay, else a blank one. Inserting into a
        bay with a failed drive replaces it with a blank one. media-error: `lba`, `count` in
        512-byte blocks of the drive's data area (after its 1 MiB reserved area).
        """
        if not isinstance(bay, int) or not 1 <= bay <= BAY_COUNT:
            raise ControllerError(f"bay {bay} outside 1..{BAY_COUNT}")
        act = str(action).lower().replace("_", "-")
        allowed = {"fail": set(), "pull": set(), "insert": {"serial", "new", "size_bytes"},
                   "media-error": {"lba", "count"}, "latency": {"ms"}, "predictive": set(), "clear": set()}
        if act not in allowed:
            raise ControllerError(f"fault action {action!r}: one of {', '.join(allowed)}")
        extra = set(kw) - allowed[act]
        if extra:
            raise ControllerError(f"fault {act}: unexpected argument {sorted(extra)[0]}")
        d = self.enclosure.bays[bay]
        if act == "insert":
            self._insert(bay, kw.get("serial"), bool(kw.get("new", False)), kw.get("size_bytes"))
            return self.disks()[bay - 1]
        if d is None:
            raise ControllerError(f"bay {bay} is empty")
        if act == "fail":
            if d.failed:
                raise ControllerError(f"the drive in bay {bay} has already failed")
            d.failed = True
            self.log.emit(EventCode.DRIVE_FAILED, f"drive {d.serial} in bay {bay} failed", bay=bay,
                          array=self._role(d)[1])
            self._drive_lost(d)
        elif act == "pull":
            array = self._role(d)[1]
            self.enclosure.pull(bay)
            self.log.emit(EventCode.DRIVE_PULLED, f"drive {d.serial} removed from bay {bay}", bay=bay, array=array)
            self._drive_lost(d)
        elif act == "media-error":
            lba, count = kw.get("lba"), kw.get("count", 1)
            if not isinstance(lba, int) or not isinstance(count, int) or lba < 0 or count < 1:
                raise ControllerError("media-error: lba >= 0 and count >= 1 (512-byte blocks)")
            try:
                d.add_media_error(lba * BLOCK_SIZE, count * BLOCK_SIZE)
            except EnclosureError as exc:
                raise ControllerError(str(exc)) from None
            self.log.emit(EventCode.DRIVE_MEDIA_ERROR,
                          f"drive {d.serial} in bay {bay}: media error injected at LBA {lba}+{count}", bay=bay)
            self._save_nvram()
        elif act == "latency":
            ms = kw.get("ms")
            if not isinstance(ms, int | float) or ms < 0 or ms > 60000:
                raise ControllerError("latency: ms between 0 and 60000")
            d.latency_ms = float(ms)
            self.log.emit(EventCode.DRIVE_LATENCY, f"drive {d.serial} in bay {bay}: {ms} ms added latency", bay=bay)
            self._save_nvram()
        elif act == "predictive":
            d.predictive = True
            self.log.emit(EventCode.DRIVE_PREDICTIVE_FAILURE, f"drive {d.serial} in bay {bay} predicts failure",
                          bay=bay)
            self._save_nvram()
        elif act == "clear":
            d.clear_faults()
            self.log.emit(EventCode.DRIVE_FAULTS_CLEARED, f"drive {d.serial} in bay {bay}: faults cleared", bay=bay)
            self._save_nvram()
        return self.disks()[bay - 1]

    def _insert(self, bay: int, serial: str | None, new: bool, size_bytes: int | None) -> None:
        d = self.enclosure.bays[bay]
        if d is not None:
            if not d.failed:
                raise ControllerError(f"bay {bay} is occupied")
            if serial is not None:
                raise ControllerError(f"bay {bay} holds a failed drive; insert a new one there or pull it first")
            size_bytes = size_bytes or d.size_bytes
            self.enclosure.discard(bay)
            new = True
        if serial is None and not new:
            # the drive last pulled from this bay, unless it had failed (then: a new one)
            last = [x for x in self.enclosure.aside.values() if x.last_bay == bay and not x.failed]
            if last:
                serial = last[-1].serial
            else:
                new = True
        if new:
            size = size_bytes or self._typical_size()
            if not isinstance(size, int) or size < METADATA_BYTES + 16 * MIB or size % BLOCK_SIZE:
                raise ControllerError(f"drive size {size}: at least 17 MiB, a multiple of 512")
            drive = self.enclosure.new_drive(bay, size, "", 0)
            self._identify_blank(drive)
            self.log.emit(EventCode.DRIVE_INSERTED,
                          f"new drive {drive.serial} ({size} bytes) inserted in bay {bay}", bay=bay)
            self._drive_arrived(drive, blank=True)
        else:
            assert serial is not None
            if serial not in self.enclosure.aside:
                raise ControllerError(f"no pulled drive with serial {serial}")
            try:
                drive = self.enclosure.insert(bay, serial)
            except EnclosureError as exc:
                raise ControllerError(str(exc)) from None
            self.log.emit(EventCode.DRIVE_INSERTED, f"drive {serial} inserted in bay {bay}", bay=bay)
            self._drive_arrived(drive, blank=False)
        self._refresh()
        self._activate_spares()

    def _typical_size(self) -> int:
        sizes = [d.size_bytes for d in self.enclosure.present()]
        return max(set(sizes), key=sizes.count) if sizes else 36 * GIB

    def _component(self, kind: str, n: int, action: str) -> None:
        states = self.enclosure.psus if kind == "psu" else self.enclosure.fans
        label = "power supply" if kind == "psu" else "fan"
        if not isinstance(n, int) or not 1 <= n <= len(states):
            raise ControllerError(f"{label} {n} outside 1..{len(states)}")
        act = str(action).lower()
        if act not in ("fail", "restore"):
            raise ControllerError(f"{label} action {action!r}: fail or restore")
        new = ComponentState.FAILED if act == "fail" else ComponentState.OK
        if states[n - 1] is new:
            return
        states[n - 1] = new
        code = {("psu", "fail"): EventCode.PSU_FAILED, ("psu", "restore"): EventCode.PSU_RESTORED,
                ("fan", "fail"): EventCode.FAN_FAILED, ("fan", "restore"): EventCode.FAN_RESTORED}[(kind, act)]
        self.log.emit(code, f"{label} {n} {'failed' if act == 'fail' else 'restored'}")
        self._save_nvram()

    def fault_psu(self, n: int, action: str) -> None:
        self._component("psu", n, action)

    def fault_fan(self, n: int, action: str) -> None:
        self._component("fan", n, action)

    def set_temperature(self, celsius: float) -> None:
        if not isinstance(celsius, int | float) or not -40 <= celsius <= 120:
            raise ControllerError(f"temperature {celsius}: -40..120 degrees C")

        def band(t: float) -> int:
            return 2 if t >= TEMP_CRIT_C else 1 if t >= TEMP_WARN_C else 0

        old = self.enclosure.temperature_c
        self.enclosure.temperature_c = float(celsius)
        if band(old) != band(celsius):
            sev = (Severity.CRITICAL, Severity.WARNING, Severity.INFO)[2 - band(celsius)]
            what = ("normal", "above the warning threshold", "critical")[band(celsius)]
            self.log.emit(EventCode.TEMPERATURE, f"enclosure temperature {celsius} C: {what}", severity=sev)
        self._save_nvram()

    # ============================================================ cache, battery, power
    def _open_cache(self, nvram: dict[str, Any] | None) -> None:
        """Settings (NVRAM first, else the spec), the battery, and the mapped cache file."""
        raw = (nvram or {}).get("cache")
        base = self.spec.cache
        self.cache_cfg = CacheSettings.from_dict(raw, base) if isinstance(raw, dict) else \
            CacheSettings.from_dict(base.to_dict())
        self._check_cache_cfg(self.cache_cfg)
        now = self.clock.now()
        b = (nvram or {}).get("battery") or {}
        self.battery = Battery(now, holdup_s=self.cache_cfg.holdup_s, charge_s=self.cache_cfg.charge_s,
                               charge=float(b.get("charge", 100.0)), failed=bool(b.get("failed", False)),
                               missing=bool(b.get("missing", False)), low=bool(b.get("low", False)))
        self._battery_state = self.battery.state(now)
        self._powered = True
        self._off_at = 0.0
        self._holdup_at_off = 0.0
        self._spinup_until: float | None = None
        self._cache_why = ""
        self.data_lost: dict[int, int] = {}
        path = self.state_dir / CACHE_FILE
        try:
            self.cache = WriteCache(path, self.cache_cfg.size_mb * MIB, self.clock,
                                    ratio_read_percent=self.cache_cfg.ratio_read_percent)
        except (CacheError, OSError) as exc:
            raise ShelfError(f"cache file {path}: {exc}") from exc

    @staticmethod
    def _check_cache_cfg(c: CacheSettings) -> None:
        if not isinstance(c.size_mb, int) or not 1 <= c.size_mb <= 1024:
            raise ShelfError(f"cache size {c.size_mb} MB: 1..1024 (the MSA500 has 128 or 256)")
        if c.ratio_read_percent not in RATIOS:
            raise ShelfError(f"cache ratio {c.ratio_read_percent}: read share 0, 25, 50, 75 or 100 %")
        for name in ("holdup_s", "charge_s", "spinup_s"):
            v = getattr(c, name)
            if not isinstance(v, int | float) or v < 0:
                raise ShelfError(f"cache setting {name} {v!r}: seconds, not negative")

    def _replay_cache(self) -> None:
        """What the cache file still holds (a crash, a power cut) goes to the drives now."""
        cache = self.cache
        held = cache.dirty_luns()
        if cache.torn or cache.superseded or held:
            blocks = cache.dirty_bytes // BLOCK_SIZE
            for lun in [x for x in held if x not in self.lds]:
                lost = cache.drop_lun(lun)
                self.log.emit(EventCode.CACHE_DATA_LOST,
                              f"cache held {lost} blocks for LUN {lun}, which no longer exists", lun=lun)
            cache.destage_all()
            for lun, exc in sorted(cache.errors.items()):
                self._cache_lost({lun: self._drop_failed(lun)}, f"cannot be written ({exc})")
            cache.errors.clear()
            per_lun = ", ".join(f"LUN {x}: {n} lines" for x, n in sorted(held.items())) or "nothing held"
            kept = cache.dirty_bytes // BLOCK_SIZE  # a full file system leaves them in the cache
            self.log.emit(EventCode.CACHE_REPLAYED,
                          f"cache replayed {blocks - kept} blocks to the drives ({per_lun}); "
                          f"{cache.torn} torn slots ignored"
                          + (f"; {kept} blocks stay in the cache until the drives take them" if kept else ""))
            for d in self.enclosure.present():
                d.flush()
        if cache.slots != cache.want_slots and not cache.dirty_lines:
            cache.resize(cache.want_slots * 4096)

    def _drop_failed(self, lun: int) -> tuple[int, int]:
        first = min((k & ((1 << 48) - 1)) * 8 for k in self.cache._dirty if k >> 48 == lun) \
            if self.cache.dirty_luns().get(lun) else 0
        return self.cache.drop_lun(lun), first

    def _cache_lost(self, lost: dict[int, tuple[int, int]], why: str) -> None:
        """Acknowledged writes are gone: one event, and a deferred error on each LUN hit."""
        lost = {lun: v for lun, v in lost.items() if v[0]}
        if not lost:
            return
        text = ", ".join(f"LUN {lun}: {n} blocks from LBA {first}" for lun, (n, first) in sorted(lost.items()))
        self.log.emit(EventCode.CACHE_DATA_LOST, f"unwritten cache data lost ({why}): {text}",
                      lun=next(iter(lost)) if len(lost) == 1 else None)
        for lun, (n, first) in lost.items():
            self.data_lost[lun] = self.data_lost.get(lun, 0) + n
            ld = self.lds.get(lun)
            if ld is not None and ld.unit is not None:
                ld.unit.set_deferred_error(cache_data_lost_sense(first))

    def _not_ready(self, state: UnitState) -> ScsiError | None:
        if state is UnitState.FAILED:
            return unit_offline_sense()
        if not self._powered:
            return powered_off_sense()
        if self._spinup_until is not None:
            return becoming_ready_sense()
        return None

    def _update_ready(self) -> None:
        for ld in self.lds.values():
            if ld.unit is not None:
                ld.unit.not_ready_reason = self._not_ready(ld.state)

    def _cache_mode(self) -> tuple[bool, str]:
        """(write-back?, why) from the settings and the battery."""
        c = self.cache_cfg
        if not c.enabled:
            return False, "cache disabled"
        if not self.cache.can_write_back:
            return False, "write share 0 %"
        st = self.battery.state(self.clock.now())
        if st is not BatteryState.OK:
            if c.force_write_back:
                return True, f"write-back forced on, battery {st.value}"
            return False, f"battery {st.value}"
        return True, "battery ok"

    def _apply_cache_mode(self, quiet: bool = False) -> None:
        """Switch write-back/write-through when the reasons say so; hosts see WCE change."""
        wb, why = self._cache_mode()
        self._cache_why = why
        self.cache.set_read_cache(self.cache_cfg.enabled)
        if not self.cache_cfg.enabled:
            self.cache.drop_clean()
        if wb == self.cache.write_back:
            return
        if not wb:
            self.cache.destage_all()  # write-through from now on: nothing may stay behind
        self.cache.write_back = wb
        for lun, ld in sorted(self.lds.items()):
            if ld.unit is not None and ld.unit.mode.set_write_cache_available(wb) and not quiet:
                self.controller.establish_unit_attention(lun, 0x2A01)  # MODE PARAMETERS CHANGED
        if not quiet:
            if wb:
                self.log.emit(EventCode.CACHE_WRITE_BACK, f"cache is write-back ({why})")
            else:
                self.log.emit(EventCode.CACHE_WRITE_THROUGH, f"cache is write-through ({why})")

    def _cache_advance(self, now: float) -> None:
        if self._spinup_until is not None and now >= self._spinup_until:
            self._spinup_until = None
            self._update_ready()
        st = self.battery.state(now)
        if st is not self._battery_state:
            self.battery.refresh(now)
            self._battery_state = st
            if st is BatteryState.OK:
                self.log.emit(EventCode.BATTERY_CHARGED, "cache battery charged")
            self._apply_cache_mode()
            self._save_nvram()
        due = self.cache.next_deadline()
        if due is not None and now >= due:
            self.cache.step()
            for lun in list(self.cache.errors):
                ld = self.lds.get(lun)
                if ld is None or ld.state is UnitState.FAILED:
                    self._cache_lost({lun: self._drop_failed(lun)}, f"logical drive {lun} failed")
                    self.cache.errors.pop(lun, None)

    @property
    def powered(self) -> bool:
        return self._powered

    def _need_power(self, what: str) -> None:
        if not self._powered:
            raise ControllerError(f"{what}: the shelf is powered off")

    def set_cache(self, enabled: bool | None = None, ratio_read_percent: int | None = None,
                  size_mb: int | None = None, force_write_back: bool | None = None) -> dict[str, Any]:
        """ACU's array accelerator settings: enable/disable, read/write ratio, size, no-battery write cache."""
        self._need_power("set cache")
        if enabled is None and ratio_read_percent is None and size_mb is None and force_write_back is None:
            raise ControllerError("set cache: nothing to change (enabled, ratio, size)")
        if enabled is not None and not isinstance(enabled, bool):
            raise ControllerError(f"set cache: enabled {enabled!r} is true or false")
        if force_write_back is not None and not isinstance(force_write_back, bool):
            raise ControllerError(f"set cache: force_write_back {force_write_back!r} is true or false")
        if ratio_read_percent is not None and (not isinstance(ratio_read_percent, int)
                                               or ratio_read_percent not in RATIOS):
            raise ControllerError(f"cache ratio {ratio_read_percent}: the read share is 0, 25, 50, 75 or 100 %")
        if size_mb is not None and (not isinstance(size_mb, int) or not 1 <= size_mb <= 1024):
            raise ControllerError(f"cache size {size_mb} MB: 128 or 256 (1..1024 allowed)")
        resize = size_mb is not None and size_mb * MIB != self.cache.slots * 4096
        will_flush = enabled is False or ratio_read_percent == 100
        if resize and self.cache.dirty_lines and not will_flush:
            raise ControllerError(f"the cache holds {self.cache.dirty_bytes} bytes not yet written to the drives; "
                                  "disable it first (the data is written out), then change the size")
        c = self.cache_cfg
        changes: list[str] = []
        if enabled is not None and enabled != c.enabled:
            c.enabled = enabled
            changes.append("enabled" if enabled else "disabled")
        if force_write_back is not None and force_write_back != c.force_write_back:
            c.force_write_back = force_write_back
            changes.append(f"no-battery write cache {'on' if force_write_back else 'off'}")
        self._apply_cache_mode()
        if ratio_read_percent is not None and ratio_read_percent != c.ratio_read_percent:
            self.cache.set_ratio(ratio_read_percent)
            c.ratio_read_percent = ratio_read_percent
            changes.append(f"ratio {ratio_read_percent}% read / {100 - ratio_read_percent}% write")
            self._apply_cache_mode()
        if resize and size_mb is not None:
            try:
                self.cache.resize(size_mb * MIB)
            except CacheError as exc:
                raise ControllerError(str(exc)) from None
            c.size_mb = size_mb
            for ld in self.lds.values():
                if ld.unit is not None:
                    ld.unit.cache_bytes = size_mb * MIB
            changes.append(f"size {size_mb} MB")
        if changes:
            self.log.emit(EventCode.CACHE_SETTINGS, f"cache settings: {', '.join(changes)}")
            self._save_nvram()
        return self.cache_stats()

    def fault_battery(self, action: str) -> dict[str, Any]:
        """Battery faults: fail, remove, low, restore (a new pack that then charges)."""
        act = str(action).lower()
        now = self.clock.now()
        b = self.battery
        if act == "fail":
            if b.failed or b.missing:
                raise ControllerError(f"the battery is already {b.state(now).value}")
            b.fail(now)
            self.log.emit(EventCode.BATTERY_FAILED, "cache battery failed")
        elif act == "remove":
            if b.missing:
                raise ControllerError("the battery is already removed")
            b.remove(now)
            self.log.emit(EventCode.BATTERY_REMOVED, "cache battery removed")
        elif act == "low":
            if b.failed or b.missing:
                raise ControllerError(f"the battery is {b.state(now).value}")
            b.set_low(now)
            self.log.emit(EventCode.BATTERY_LOW, f"cache battery charge low ({b.charge(now):.0f} %)")
        elif act == "restore":
            if not (b.failed or b.missing or b.low):
                raise ControllerError("the battery has no fault to restore")
            b.restore(now)
            self.log.emit(EventCode.BATTERY_RESTORED, "cache battery installed; charging")
        else:
            raise ControllerError(f"battery action {action!r}: fail, remove, low or restore")
        self._battery_state = b.state(now)
        if self._powered:
            self._apply_cache_mode()
        self._save_nvram()
        return b.describe(now)

    def power_off(self, now: float | None = None) -> dict[str, Any]:
        """A power cut: nothing is written out; the battery keeps the cache (and drains)."""
        if not self._powered:
            raise ControllerError("the shelf is already powered off")
        t = self.clock.now() if now is None else now
        self._holdup_at_off = self.battery.holdup_left(t)
        self.battery.power_off(t)
        self._powered = False
        self._off_at = t
        self._spinup_until = None
        self._update_ready()
        dirty = self.cache.dirty_bytes
        self.log.emit(EventCode.SHELF_POWER_OFF,
                      f"shelf powered off; {dirty} bytes of unwritten cache data held by the battery "
                      f"({self.battery.state(t).value}, up to {self._holdup_at_off:.0f} s)")
        return {"powered": False, "dirty_bytes": dirty, "holdup_seconds": self._holdup_at_off}

    def power_on(self, now: float | None = None) -> dict[str, Any]:
        """Power back: the cache replays what the battery kept (or reports the loss), drives spin up."""
        if self._powered:
            raise ControllerError("the shelf is already powered on")
        t = self.clock.now() if now is None else now
        off = max(0.0, t - self._off_at)
        self.battery.power_on(t)
        held = self.battery.holdup_left(t) > 0 and off <= self._holdup_at_off
        self._powered = True
        self.data_lost = {}
        self.controller.power_on()  # every nexus seen next gets POWER ON (29/00)
        self.rso.restart()  # heartbeat deadlines count from power on
        for ld in self.lds.values():
            if ld.unit is not None:
                ld.unit.set_deferred_error(None)
        if not held:
            why = (f"the battery held the cache for at most {self._holdup_at_off:.0f} s, power was off "
                   f"{off:.0f} s") if self._holdup_at_off > 0 else f"battery {self.battery.state(t).value}"
            self._cache_lost(self.cache.drop_all(), why)
        else:
            self._replay_cache()
        spin = float(self.cache_cfg.spinup_s)
        self._spinup_until = t + spin if spin > 0 else None
        self._battery_state = self.battery.state(t)
        self._update_ready()
        self._apply_cache_mode()
        self.log.emit(EventCode.SHELF_POWER_ON, f"shelf powered on after {off:.0f} s; drives spin up for {spin:.0f} s")
        self._save_nvram()
        return {"powered": True, "off_seconds": off, "data_lost": dict(self.data_lost)}

    def cache_stats(self) -> dict[str, Any]:
        now = self.clock.now()
        s = self.cache.stats()
        s.update({
            "enabled": self.cache_cfg.enabled,
            "size_mb": s["size_bytes"] // MIB,
            "state": "write-back" if self.cache.write_back else "write-through",
            "reason": self._cache_why,
            "force_write_back": self.cache_cfg.force_write_back,
            "battery": self.battery.state(now).value,
            "battery_charge_percent": self.battery.reported_charge(now),
            "holdup_seconds": round(self.battery.holdup_left(now), 1),
            "data_lost_blocks": {str(k): v for k, v in sorted(self.data_lost.items())},
            "powered": self._powered,
        })
        return s

    # ============================================================ Recovery Server Option
    def _rso_event(self, code: EventCode, message: str) -> None:
        self.log.emit(code, message)

    def _rso_changed(self, persistent: bool) -> None:
        """Apply the model's port states to every logical drive at once; keep settings in NVRAM."""
        self.controller.set_port_states(self.rso.port_states())
        if persistent:
            self._save_nvram()

    def _rso_nexus(self, nexus: Any, seen: bool) -> None:
        if seen:
            self.rso.nexus_seen(nexus)
        else:
            self.rso.nexus_loss(nexus)

    def rso_configure(self, enabled: bool, timeout_s: float | None = None,
                      act_alone: bool | None = None) -> dict[str, Any]:
        """Configure RSO as the primary does (the recovery joins with its first acknowledgment)."""
        try:
            self.rso.configure(enabled, timeout_s, act_alone)
        except (RsoError, ValueError) as exc:
            raise ControllerError(str(exc)) from None
        return self.rso.status()

    def rso_status(self) -> dict[str, Any]:
        return self.rso.status()

    def rso_failover(self) -> dict[str, Any]:
        """Forced failover (the F8 key) from the management side."""
        try:
            self.rso.failover(None)
        except RsoError as exc:
            raise ControllerError(str(exc)) from None
        return self.rso.status()

    def rso_restore(self) -> dict[str, Any]:
        """Manual restore: refused while the recovery host is logged in on port 2."""
        try:
            self.rso.restore()
        except RsoError as exc:
            raise ControllerError(str(exc)) from None
        return self.rso.status()

    def fault_link(self, port: int, action: str) -> dict[str, Any]:
        """Break ("down") or mend ("up") a port's heartbeat link."""
        if port not in (1, 2):
            raise ControllerError(f"port {port}: ports are 1 and 2")
        if action not in ("down", "up"):
            raise ControllerError(f"link action {action!r}: down or up")
        self.rso.link(port, action == "up")
        return self.rso.status()

    # ============================================================ lifecycle
    def flush(self) -> None:
        """Everything the cache holds to the drives, and the drives to stable storage."""
        if self._powered:
            self.cache.destage_all()
        for d in self.enclosure.present():
            d.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._save_nvram()
        self.flush()
        self.cache.close()
        self.intents.close()
        self.member_journal.close()
        self.enclosure.close()
        self._closed = True


Shelf = Controller
