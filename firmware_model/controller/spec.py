"""What a new shelf is built from, and where its logical drives go.

A `ShelfSpec` (the TOML config's [shelf] section) names each bay's drive size and the layout:
arrays of bays and the logical drives carved from them (or the old simple form, one single-drive
RAID 0 array per bay). `plan` checks a spec and places each logical drive on its array; the same
rules (RAID level names, stripe sizes, ACU's RAID 1 / 1+0 naming) serve the management commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cache import CacheSettings
from ..enclosure import BAY_COUNT
from ..metadata import METADATA_BYTES
from ..operations import (
    BLOCK_SIZE,
    DEFAULT_STRIPE_KIB,
    MAX_CONNECTIONS,
    MAX_LUNS,
    MIN_DRIVE_BYTES,
    MIN_UNIT_BYTES,
    STRIPE_KIB,
)
from ..raid.api import RaidLevel
from ..raid.layout import Layout, capacity_bytes
from ..raid.layout import validate as validate_layout
from .errors import ControllerError, ShelfError

KIB = 1 << 10
GIB = 1 << 30

#: every name a RAID level goes by, lower-case (the one vocabulary is RaidLevel.parse / .label)
RAID_NAMES: dict[str, RaidLevel] = {n.lower(): RaidLevel.parse(n) for n in RaidLevel.names()}


def raid_label(level: RaidLevel) -> str:
    return level.label


def parse_raid(raid: str | int | RaidLevel) -> RaidLevel:
    try:
        return RaidLevel.parse(raid)
    except ValueError as exc:
        raise ControllerError(str(exc)) from None


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


@dataclass
class ConnectionSpec:
    """A host connection a new shelf starts with (ADD CONNECTION; firmware_model.controller.access)."""

    name: str
    iqn: str
    port: int | None = None  # None: either port


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
    connections: list[ConnectionSpec] = field(default_factory=list)

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
            if size and (size < MIN_DRIVE_BYTES or size % BLOCK_SIZE):
                raise ShelfError(f"bay {bay}: drive size {size} too small or not a multiple of 512")
        from .access import connection_problem  # (local: access imports the room machinery)

        names: set[str] = set()
        for i, h in enumerate(self.connections):
            problem = connection_problem(h.name, h.iqn, h.port)
            if problem or h.name.lower() in names:
                raise ShelfError(f"connections[{i}]: {problem or f'connection {h.name} named twice'}")
            names.add(h.name.lower())
        if len(self.connections) > MAX_CONNECTIONS:
            raise ShelfError(f"at most {MAX_CONNECTIONS} connections")
        plan(self)


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
class PlannedLd:
    spec: LogicalDriveSpec
    level: RaidLevel
    stripe_unit: int
    base: int
    num_blocks: int


def plan(spec: ShelfSpec) -> dict[str, list[PlannedLd]]:
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
    placed: dict[str, list[PlannedLd]] = {a.name: [] for a in arrays}
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
            level = level_for(parse_raid(ld.raid), len(a.bays))
            su = stripe_unit(ld.stripe_kib, level, len(a.bays))
        except ControllerError as exc:
            raise ShelfError(f"LUN {ld.lun}: {exc}") from exc
        member_bytes = min(spec.drive_bytes[b - 1] for b in a.bays) - METADATA_BYTES
        room = member_bytes - free[a.name]
        if ld.size_bytes is None:
            size = capacity_bytes(level, len(a.bays), room, su) // BLOCK_SIZE * BLOCK_SIZE
        else:
            size = ld.size_bytes
        if size < MIN_UNIT_BYTES or size % BLOCK_SIZE:
            raise ShelfError(f"LUN {ld.lun}: size {size} is not a whole number of blocks")
        need = Layout(level, len(a.bays), su).per_member_bytes(size)
        if need > room:
            raise ShelfError(
                f"LUN {ld.lun}: {size} bytes need {need} bytes per drive, array {a.name} has {room} left"
            )
        placed[a.name].append(PlannedLd(ld, level, su, free[a.name], size // BLOCK_SIZE))
        free[a.name] += need
    return placed


def level_for(level: RaidLevel, n: int) -> RaidLevel:
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


def stripe_unit(stripe_kib: int | None, level: RaidLevel, n: int) -> int:
    kib = DEFAULT_STRIPE_KIB if stripe_kib is None else stripe_kib
    if kib not in STRIPE_KIB:
        raise ControllerError(f"stripe size {kib} KiB not one of {', '.join(map(str, STRIPE_KIB))}")
    return kib * KIB
