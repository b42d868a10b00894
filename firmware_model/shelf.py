"""Compatibility names: the shelf now lives in firmware_model.controller.

`Shelf(state_dir, spec, clock)` is the Controller: `.identity`, `.controller` (the
ScsiTarget), `.describe()`, `.close()`, `.state_dir` as before, plus the management
operations. `ShelfSpec(luns=[LunSpec(...)])` still builds single-drive RAID 0 arrays.
"""

from __future__ import annotations

from .controller import (
    BLOCK_SIZE,
    GIB,
    NVRAM_FILE,
    PORT_COUNT,
    ArraySpec,
    ControllerError,
    LogicalDriveSpec,
    LunSpec,
    Shelf,
    ShelfError,
    ShelfSpec,
)
from .enclosure import BAY_COUNT
from .metadata import METADATA_BYTES

__all__ = [
    "BAY_COUNT",
    "BLOCK_SIZE",
    "GIB",
    "METADATA_BYTES",
    "NVRAM_FILE",
    "PORT_COUNT",
    "ArraySpec",
    "ControllerError",
    "LogicalDriveSpec",
    "LunSpec",
    "Shelf",
    "ShelfError",
    "ShelfSpec",
]
