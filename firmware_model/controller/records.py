"""The controller's runtime records: logical drives, arrays, unit states, rebuild pace.

`LdConfig` / `ArrayConfig` (firmware_model.metadata) are what is stored; these wrap them with
what only lives while the controller runs (the RaidVolumes, the SCSI unit, progress marks).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ..enclosure import Drive
from ..lost_blocks import LostBlocks
from ..metadata import ArrayConfig, LdConfig
from ..operations import BLOCK_SIZE, MIB
from ..raid.api import DriveError, RaidLevel
from ..raid.layout import Layout
from ..raid.volume import MemberWrite, RaidVolume
from ..write_journal import MemberJournal
from .spec import KIB

if TYPE_CHECKING:
    from ..scsi.sbc import BlockUnit
    from .ld_volume import LdVolume


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


# priority -> (bytes per step, seconds between steps, steps per advance call at most). One step per
# call: the event loop serves the hosts between steps (4 steps a call held a second session's read
# up to 312 ms during a rebuild; scripts/bench-stall's rebuild phase).
PACE: dict[RebuildPriority, tuple[int, float, int]] = {
    RebuildPriority.HIGH: (4 * MIB, 0.0, 1),
    RebuildPriority.MEDIUM: (2 * MIB, 0.1, 1),
    RebuildPriority.LOW: (1 * MIB, 0.5, 1),
}


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


class JournalView:
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
class MemberErr:
    array: str
    slot: int
    error: DriveError
