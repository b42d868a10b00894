"""The controller's NVRAM: one JSON image, assembled from what each subsystem keeps there.

The configuration itself is kept twice, as Smart Array keeps it: on every working drive's
reserved area (a new generation at each change, `commit`) and in NVRAM (`save`, also for
settings that are not configuration: faults, cache, battery, RSO). The newest generation
wins at start-up (firmware_model.controller.startup).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..metadata import DriveRecord, ShelfConfig
from ..raid.api import MemberState
from .errors import ShelfError
from .records import RebuildPriority

if TYPE_CHECKING:
    from .core import Controller

NVRAM_FILE = "controller-nvram.json"
NVRAM_FORMAT = 2


class Nvram:
    def __init__(self, c: Controller) -> None:
        self.c = c
        self.path = c.state_dir / NVRAM_FILE

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ShelfError(f"controller NVRAM {self.path} unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") not in (1, NVRAM_FORMAT):
            raise ShelfError(f"controller NVRAM {self.path} has an unknown format")
        from ..nvram_check import NvramError, check_nvram, check_v1  # (local: this method's own check)

        try:  # valid JSON of the wrong shape: refused here, naming the key, before anyone reads it
            if data["format"] == 1:
                check_v1(data)
            else:
                check_nvram(data, [p.value for p in RebuildPriority])
        except NvramError as exc:
            raise ShelfError(f"controller NVRAM {self.path}: {exc}") from exc
        return data

    def snapshot(self) -> ShelfConfig:
        c = self.c
        cfg = c.cfg
        cfg.rebuilding = {}
        failed: set[str] = set()
        for arr in c.arrays.values():
            for d in arr.members:
                if d.member_state is MemberState.REBUILDING and not d.failed:
                    cfg.rebuilding[d.serial] = d.rebuilt_to
            if arr.copy_target is not None:
                cfg.rebuilding[arr.copy_target.serial] = arr.copy_target.rebuilt_to
        for d in [*c.enclosure.present(), *c.enclosure.aside.values()]:
            if d.failed:
                failed.add(d.serial)
        for arr in c.arrays.values():
            for d in arr.members:
                if d.failed:
                    failed.add(d.serial)
        cfg.failed = sorted(failed)
        return cfg

    def commit(self) -> None:
        """A configuration change: new generation on every working drive and in NVRAM."""
        c = self.c
        cfg = self.snapshot()
        cfg.generation += 1
        for d in c.enclosure.present():
            if not d.failed:
                d.write_record(DriveRecord(d.serial, d.wwid, d.size_bytes, cfg))
        self.save()

    def save(self) -> None:
        """Write the whole image: the configuration and each subsystem's own part."""
        c = self.c
        cfg = self.snapshot()
        data = {
            "format": NVRAM_FORMAT,
            "serial": cfg.serial,
            "product": cfg.product,
            "firmware": cfg.firmware,
            "next_drive": c.next_drive,
            **c.faults.to_dict(),  # "enclosure", "faults"
            "config": cfg.to_dict(),
            **c.accel.to_dict(),  # "cache", "battery"
            "rso": c.rso.to_dict(),
            "access": c.access.to_dict(),
            "alua": c.alua_link.to_dict(),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)
