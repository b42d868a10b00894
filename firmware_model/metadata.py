"""The array configuration as the controller stores it: on every drive and in NVRAM.

Each drive's first MiB (Smart Array calls it the RIS, reserved information sector) holds
a record: the drive's own serial and WWID plus the whole shelf configuration with a
generation counter. The record is written in two slots (A at 0, B at 512 KiB) alternately,
each with a magic, a version, a length and a CRC32, so a torn write leaves the other slot
readable. At start the controller takes the highest generation found on the drives or in
NVRAM, and matches drives by serial: a drive moved to another bay is still a member.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

METADATA_BYTES = 1 << 20  # reserved at the start of every drive
SLOT_BYTES = METADATA_BYTES // 2
MAGIC = b"MSA5RIS\x00"
VERSION = 1
_HEADER = struct.Struct(">8sHHIQI")  # magic, version, slot, length, write sequence, crc32 of body
HEADER_BYTES = _HEADER.size


class MetadataError(Exception):
    """A record that cannot be read (bad magic, checksum, JSON or version)."""


@dataclass
class LdConfig:
    """One logical drive: a RAID volume on an extent of its array's members."""

    lun: int
    name: str
    array: str
    raid: str  # RaidLevel value
    stripe_kib: int
    base_offset: int  # bytes into each member's data area
    num_blocks: int
    failed: bool = False  # sticky: data lost until deleted (or its drives come back)
    lost: list[list[int]] = field(default_factory=list)  # [first LBA, count]: unreconstructible blocks
    gone: bool = False  # failed, and a drive it needs was replaced: it never comes back by itself


@dataclass
class ExpandLd:
    lun: int
    old_raid: str
    new_raid: str
    old_base: int
    new_base: int
    watermark: int = 0  # logical bytes already in the new layout
    done: bool = False


@dataclass
class ExpandConfig:
    """An array capacity expansion under way: old members are a prefix of the new ones."""

    old_count: int
    lds: list[ExpandLd] = field(default_factory=list)


@dataclass
class ArrayConfig:
    name: str
    members: list[str]  # drive serials, member order
    home_bays: list[int]  # the bay each member slot belongs to (its original drive's bay)
    member_bytes: int  # usable bytes of each member's data area
    spares: list[str] = field(default_factory=list)
    expand: ExpandConfig | None = None
    copyback: str = ""  # serial of the drive being filled to take a slot back from its spare
    copyback_slot: int = -1


@dataclass
class ShelfConfig:
    serial: str
    product: str = "MSA500"
    firmware: str = "2.10"
    generation: int = 0
    rebuild_priority: str = "high"
    arrays: list[ArrayConfig] = field(default_factory=list)
    lds: list[LdConfig] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # serials of failed drives
    rebuilding: dict[str, int] = field(default_factory=dict)  # serial -> rebuild watermark

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> ShelfConfig:
        try:
            arrays = []
            for a in raw.get("arrays", []):
                exp = a.get("expand")
                expand = None
                if exp is not None:
                    expand = ExpandConfig(int(exp["old_count"]), [ExpandLd(**x) for x in exp["lds"]])
                arrays.append(
                    ArrayConfig(
                        name=str(a["name"]),
                        members=[str(s) for s in a["members"]],
                        home_bays=[int(b) for b in a["home_bays"]],
                        member_bytes=int(a["member_bytes"]),
                        spares=[str(s) for s in a.get("spares", [])],
                        expand=expand,
                        copyback=str(a.get("copyback", "")),
                        copyback_slot=int(a.get("copyback_slot", -1)),
                    )
                )
            return ShelfConfig(
                serial=str(raw["serial"]),
                product=str(raw.get("product", "MSA500")),
                firmware=str(raw.get("firmware", "2.10")),
                generation=int(raw.get("generation", 0)),
                rebuild_priority=str(raw.get("rebuild_priority", "high")),
                arrays=arrays,
                lds=[LdConfig(**x) for x in raw.get("lds", [])],
                failed=[str(s) for s in raw.get("failed", [])],
                rebuilding={str(k): int(v) for k, v in raw.get("rebuilding", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MetadataError(f"configuration record malformed: {exc}") from exc


@dataclass
class DriveRecord:
    """What one drive's reserved area says: who it is, and the shelf config it last saw."""

    serial: str
    wwid: int
    size_bytes: int
    config: ShelfConfig | None = None
    seq: int = 0  # per-drive write counter: the newer of the two slots wins

    @property
    def generation(self) -> int:
        return self.config.generation if self.config is not None else -1


def encode(record: DriveRecord, slot: int) -> bytes:
    body = json.dumps(
        {
            "serial": record.serial,
            "wwid": record.wwid,
            "size_bytes": record.size_bytes,
            "config": record.config.to_dict() if record.config is not None else None,
        },
        separators=(",", ":"),
    ).encode()
    if HEADER_BYTES + len(body) > SLOT_BYTES:
        raise MetadataError(f"configuration record of {len(body)} bytes does not fit the reserved area")
    header = _HEADER.pack(MAGIC, VERSION, slot, len(body), record.seq, zlib.crc32(body))
    return header + body


def decode(raw: bytes) -> DriveRecord:
    if len(raw) < HEADER_BYTES:
        raise MetadataError("short record")
    magic, version, _slot, length, seq, crc = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise MetadataError("no configuration record")
    if version != VERSION:
        raise MetadataError(f"record version {version} unknown")
    body = raw[HEADER_BYTES : HEADER_BYTES + length]
    if len(body) != length or zlib.crc32(body) != crc:
        raise MetadataError("record checksum mismatch")
    try:
        data = json.loads(body)
        cfg = ShelfConfig.from_dict(data["config"]) if data.get("config") is not None else None
        return DriveRecord(str(data["serial"]), int(data["wwid"]), int(data["size_bytes"]), cfg, seq)
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"record malformed: {exc}") from exc


def read_best(slot_a: bytes, slot_b: bytes) -> tuple[DriveRecord | None, int]:
    """The newer valid record of the two slots, and the slot to write next (the other one)."""
    best: DriveRecord | None = None
    best_slot = 1
    for slot, raw in ((0, slot_a), (1, slot_b)):
        try:
            rec = decode(raw)
        except MetadataError:
            continue
        if best is None or rec.seq > best.seq:
            best, best_slot = rec, slot
    return best, 1 - best_slot if best is not None else 0
