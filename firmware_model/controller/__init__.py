"""The array controller (see core.py for the facade and the rooms behind it).

`from firmware_model.controller import Controller, ShelfSpec, ...` keeps working: the names
below are the package's public vocabulary.
"""

from ..enclosure import BAY_COUNT
from ..operations import MIB, PORT_COUNT
from .core import Controller
from .errors import (
    CAPACITY_DATA_HAS_CHANGED,
    ControllerError,
    ShelfError,
    becoming_ready_sense,
    cache_data_lost_sense,
    powered_off_sense,
    unit_failed_sense,
    unit_offline_sense,
    unrecovered_read,
)
from .expansion import JOURNAL_FILE
from .faults import TEMP_CRIT_C, TEMP_WARN_C
from .ld_volume import IoFaults, LdVolume
from .nvram import NVRAM_FILE, NVRAM_FORMAT
from .records import PACE, ArrayRt, LogicalDrive, RebuildPriority, UnitState
from .spec import (
    BLOCK_SIZE,
    DEFAULT_STRIPE_KIB,
    GIB,
    KIB,
    MAX_LUNS,
    RAID_NAMES,
    STRIPE_KIB,
    ArraySpec,
    ConnectionSpec,
    LogicalDriveSpec,
    LunSpec,
    ShelfSpec,
    default_layout,
    parse_raid,
    raid_label,
)

__all__ = [
    "BAY_COUNT",
    "BLOCK_SIZE",
    "CAPACITY_DATA_HAS_CHANGED",
    "DEFAULT_STRIPE_KIB",
    "GIB",
    "JOURNAL_FILE",
    "KIB",
    "MAX_LUNS",
    "MIB",
    "NVRAM_FILE",
    "NVRAM_FORMAT",
    "PACE",
    "PORT_COUNT",
    "RAID_NAMES",
    "STRIPE_KIB",
    "TEMP_CRIT_C",
    "TEMP_WARN_C",
    "ArrayRt",
    "ArraySpec",
    "ConnectionSpec",
    "Controller",
    "ControllerError",
    "IoFaults",
    "LdVolume",
    "LogicalDrive",
    "LogicalDriveSpec",
    "LunSpec",
    "RebuildPriority",
    "ShelfError",
    "ShelfSpec",
    "UnitState",
    "becoming_ready_sense",
    "cache_data_lost_sense",
    "default_layout",
    "parse_raid",
    "powered_off_sense",
    "raid_label",
    "unit_failed_sense",
    "unit_offline_sense",
    "unrecovered_read",
]
