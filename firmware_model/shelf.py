"""The shelf: 14 drive bays backed by sparse image files, the controller and its NVRAM.

The foundation layout is simple: each logical drive lies on one extent of one bay's
image, after the bay's reserved metadata area. RAID layouts replace that later.
The controller NVRAM (a small JSON file) holds the controller's identity and the
logical drive map, so a restarted emulator comes back as it was; the TOML config only
describes the first build of a new shelf.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .clock import Clock
from .scsi.identity import TargetIdentity
from .scsi.sbc import BlockUnit
from .scsi.target import ScsiTarget
from .scsi.units import ControllerUnit
from .volume import ExtentVolume

BAY_COUNT = 14
PORT_COUNT = 2
BLOCK_SIZE = 512
METADATA_BYTES = 1 << 20  # reserved at the start of every drive, as Smart Array keeps its RIS
GIB = 1 << 30
NVRAM_FILE = "controller-nvram.json"


class ShelfError(Exception):
    """A shelf that cannot be built or opened as described."""


@dataclass
class LunSpec:
    lun: int
    bay: int
    size_bytes: int
    name: str = ""


@dataclass
class ShelfSpec:
    """What a new shelf is built from (the TOML config's [shelf] section)."""

    serial: str = "E03KMN5W2T"
    drive_bytes: list[int] = field(default_factory=lambda: [36 * GIB] * BAY_COUNT)
    luns: list[LunSpec] = field(default_factory=lambda: [LunSpec(1, 1, 8 * GIB, "Logical Drive 1")])
    product: str = "MSA500"
    firmware: str = "2.10"

    def validate(self) -> None:
        if len(self.drive_bytes) != BAY_COUNT:
            raise ShelfError(f"the shelf has {BAY_COUNT} bays, {len(self.drive_bytes)} drive sizes given")
        seen: set[int] = set()
        used: dict[int, int] = {}
        for spec in self.luns:
            if not 1 <= spec.lun <= 32:
                raise ShelfError(f"logical drive LUN {spec.lun} outside 1..32")
            if spec.lun in seen:
                raise ShelfError(f"LUN {spec.lun} defined twice")
            seen.add(spec.lun)
            if not 1 <= spec.bay <= BAY_COUNT:
                raise ShelfError(f"LUN {spec.lun}: bay {spec.bay} outside 1..{BAY_COUNT}")
            if spec.size_bytes < BLOCK_SIZE * 8 or spec.size_bytes % BLOCK_SIZE:
                raise ShelfError(f"LUN {spec.lun}: size {spec.size_bytes} is not a whole number of blocks")
            used[spec.bay] = used.get(spec.bay, 0) + spec.size_bytes
            room = self.drive_bytes[spec.bay - 1] - METADATA_BYTES
            if used[spec.bay] > room:
                need = used[spec.bay]
                raise ShelfError(f"bay {spec.bay}: logical drives need {need} bytes, the drive holds {room}")


class Shelf:
    """Opens (or builds) the shelf in a state directory and wires up the controller."""

    def __init__(self, state_dir: Path, spec: ShelfSpec, clock: Clock) -> None:
        self.state_dir = Path(state_dir)
        self.clock = clock
        self.state_dir.mkdir(parents=True, exist_ok=True)
        nvram_path = self.state_dir / NVRAM_FILE
        if nvram_path.exists():
            self.nvram = self._load_nvram(nvram_path)
        else:
            spec.validate()
            self.nvram = {
                "format": 1,
                "serial": spec.serial,
                "product": spec.product,
                "firmware": spec.firmware,
                "drive_bytes": spec.drive_bytes,
                "luns": [asdict(lun) for lun in spec.luns],
            }
        self.nvram_path = nvram_path
        self.fds: dict[int, int] = {}
        for bay in range(1, BAY_COUNT + 1):
            self.fds[bay] = self._open_bay(bay, int(self.nvram["drive_bytes"][bay - 1]))
        self._save_nvram()
        serial = str(self.nvram["serial"])
        target_name = f"iqn.2003-04.com.hp:msa500.{serial.lower()}"
        self.identity = TargetIdentity(
            target_name=target_name,
            serial=serial,
            product=str(self.nvram["product"]),
            revision=str(self.nvram["firmware"]),
            port_names={p: f"{target_name},t,0x{p:04x}" for p in range(1, PORT_COUNT + 1)},
        )
        self.controller = ScsiTarget(self.identity, clock)
        self.controller.add_lun(0, ControllerUnit(serial, product=self.identity.product))
        self.volumes: dict[int, ExtentVolume] = {}
        offsets: dict[int, int] = {}
        for raw in self.nvram["luns"]:
            lun = LunSpec(**raw)
            offset = offsets.get(lun.bay, METADATA_BYTES)
            offsets[lun.bay] = offset + lun.size_bytes
            vol = ExtentVolume(self.fds[lun.bay], offset, lun.size_bytes // BLOCK_SIZE, BLOCK_SIZE)
            self.volumes[lun.lun] = vol
            self.controller.add_lun(
                lun.lun,
                BlockUnit(vol, lun.name or f"Logical Drive {lun.lun}", f"{serial}L{lun.lun:02d}"),
            )
        self.controller.power_on()

    def _load_nvram(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ShelfError(f"controller NVRAM {path} unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ShelfError(f"controller NVRAM {path} has an unknown format")
        return data

    def _save_nvram(self) -> None:
        tmp = self.nvram_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.nvram, indent=2) + "\n")
        os.replace(tmp, self.nvram_path)

    def _open_bay(self, bay: int, size: int) -> int:
        path = self.state_dir / f"bay{bay:02d}.img"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # sparse: costs no disk until written
        return fd

    def describe(self) -> dict[str, object]:
        """The SHOW GLOBALS facts."""
        return {
            "product": self.identity.product,
            "serial": self.identity.serial,
            "firmware": self.identity.revision,
            "target_name": self.identity.target_name,
            "bays": BAY_COUNT,
            "ports": PORT_COUNT,
            "logical_drives": [
                {"lun": lun, "blocks": vol.num_blocks, "block_size": vol.block_size,
                 "bytes": vol.num_blocks * vol.block_size}
                for lun, vol in sorted(self.volumes.items())
            ],
            "state_dir": str(self.state_dir),
        }

    def flush(self) -> None:
        for fd in self.fds.values():
            os.fsync(fd)

    def close(self) -> None:
        self.flush()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
