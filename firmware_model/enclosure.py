"""The enclosure: 14 hot-plug drive bays, two power supplies, two fans, a thermometer.

A drive is a sparse image file (`bayNN.img` in the state directory) whose first MiB is
the reserved metadata area (firmware_model.metadata); the rest is its data area, which
the RAID engine addresses through the `Member` protocol. Pulling a drive keeps its image
aside (`pulled-<serial>.img`) so inserting the same drive again, in any bay, brings it
back. Faults are injected here: a failed drive, media errors on byte ranges of the data
area (reads fail there until the range is written again: the drive remaps on write, as
real drives do), and added latency, which the model only records (`latency_ms`) for the
asyncio process to apply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .metadata import METADATA_BYTES, SLOT_BYTES, DriveRecord, MetadataError, encode, read_best
from .raid.api import DriveError, MemberState
from .sparse import punch_hole

BAY_COUNT = 14
PSU_COUNT = 2
FAN_COUNT = 2
BLOCK = 512
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
_BAY_FILE = re.compile(r"bay(\d\d)\.img$")
_PULLED_FILE = re.compile(r"pulled-(\d\d)-([A-Za-z0-9]+)\.img$")


class DriveState(StrEnum):
    """What SHOW DISKS says about a drive."""

    OK = "ok"
    FAILED = "failed"
    MISSING = "missing"
    REBUILDING = "rebuilding"
    SPARE = "spare"
    PREDICTIVE = "predictive failure"


class ComponentState(StrEnum):
    OK = "ok"
    FAILED = "failed"


class EnclosureError(Exception):
    """An enclosure operation that cannot be done (no drive in that bay, bay occupied...)."""


def bay_path(state_dir: Path, bay: int) -> Path:
    return state_dir / f"bay{bay:02d}.img"


def pulled_path(state_dir: Path, serial: str, bay: int) -> Path:
    """Where a pulled drive's image waits, named by the bay it came from and its serial."""
    return state_dir / f"pulled-{bay:02d}-{serial}.img"


@dataclass
class MediaError:
    offset: int  # bytes into the data area
    length: int


class Drive:
    """One physical drive; as an array member it implements raid.api.Member."""

    def __init__(self, path: Path, serial: str, wwid: int, size_bytes: int) -> None:
        self.path = path
        self.serial = serial
        self.wwid = wwid
        self.size_bytes = size_bytes
        self.bay: int | None = None
        self.last_bay: int | None = None  # the bay a pulled drive came from
        self.fd: int | None = None
        self.failed = False
        self.predictive = False
        self.media_errors: list[MediaError] = []
        self.latency_ms = 0.0
        self.member_state = MemberState.OK
        self.rebuilt_to = 0
        self.meta_seq = 0
        self.meta_slot = 0
        self.blank = False  # no configuration record was found on it
        # copy-back: the drive that replaces this (spare) member receives every write it receives
        self.copy_to: Drive | None = None
        # told when a write remaps media errors, before the data lands: the owner keeps the
        # fault list durable (a remap is permanent on a real drive)
        self.on_remap: Callable[[Drive], None] | None = None
        self.copy_broken = False  # as a copy-back target: a forwarded write failed
        # I/O counters for the front panel's activity LED: two int adds per call, never reset
        self.io_reads = 0
        self.io_writes = 0
        self.io_bytes = 0

    # ------------------------------------------------------------ lifecycle
    @property
    def present(self) -> bool:
        return self.fd is not None

    def open(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size < self.size_bytes:
            os.ftruncate(fd, self.size_bytes)  # sparse: costs no disk until written
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @property
    def data_bytes(self) -> int:
        return self.size_bytes - METADATA_BYTES

    # --------------------------------------------------------- Member protocol
    @property
    def state(self) -> MemberState:
        if self.failed or self.fd is None:
            return MemberState.FAILED
        return self.member_state

    def _fd(self, offset: int, length: int) -> int:
        if self.fd is None:
            raise DriveError(offset, length, "drive missing")
        if self.failed:
            raise DriveError(offset, length, "drive failed")
        if offset < 0 or offset + length > self.data_bytes:
            raise DriveError(offset, length, "beyond the end of the drive")
        return self.fd

    def read(self, offset: int, length: int) -> bytes:
        fd, pos = self.prepare_read(offset, length)
        data = os.pread(fd, length, pos)
        self.note_read(length)
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def prepare_read(self, offset: int, length: int) -> tuple[int, int]:
        """(fd, file offset) of a read the caller does itself (drive_io), after the checks a read
        makes: DriveError for a missing or failed drive, a range beyond its end, or a media error."""
        fd = self._fd(offset, length)
        end = offset + length
        for err in self.media_errors:
            if err.offset < end and offset < err.offset + err.length:
                bad = max(offset, err.offset)
                raise DriveError(bad, min(end, err.offset + err.length) - bad, "media error")
        return fd, METADATA_BYTES + offset

    def note_read(self, length: int) -> None:
        """Count a read done (the activity LED, SHOW DISK's counters)."""
        self.io_reads += 1
        self.io_bytes += length

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        fd = self._fd(offset, len(data))
        if self.media_errors:
            self._remap(offset, len(data))
        view = memoryview(data)
        self.io_writes += 1
        self.io_bytes += view.nbytes
        pos = METADATA_BYTES + offset
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n
        target = self.copy_to
        if target is not None:
            try:
                target.write(offset, data)
            except (DriveError, OSError):
                self.copy_to = None  # the controller sees copy_broken and gives the copy-back up
                target.copy_broken = True

    def flush(self) -> None:
        if self.fd is not None and not self.failed:
            os.fdatasync(self.fd)

    def sync_fd(self) -> int | None:
        """A duplicate of the image's fd for an fdatasync elsewhere (drive_io.sync_all closes it),
        None when flush() would do nothing."""
        if self.fd is None or self.failed:
            return None
        return os.dup(self.fd)

    def _remap(self, offset: int, length: int) -> None:
        """A write over a bad range reallocates those blocks: they read fine afterwards."""
        end = offset + length
        keep: list[MediaError] = []
        for err in self.media_errors:
            e_end = err.offset + err.length
            if e_end <= offset or err.offset >= end:
                keep.append(err)
                continue
            if err.offset < offset:
                keep.append(MediaError(err.offset, offset - err.offset))
            if e_end > end:
                keep.append(MediaError(end, e_end - end))
        if len(keep) != len(self.media_errors) or keep != self.media_errors:
            self.media_errors = keep
            if self.on_remap is not None:
                self.on_remap(self)

    # ------------------------------------------------------- sparse helpers
    def has_data(self, offset: int, length: int) -> bool:
        """Whether any byte of [offset, offset+length) of the data area was ever written."""
        if self.fd is None or self.failed:
            return False
        pos = METADATA_BYTES + offset
        try:
            data = os.lseek(self.fd, pos, SEEK_DATA)
        except OSError:
            return False  # ENXIO: only a hole up to the end
        return data < pos + length

    def discard(self, offset: int, length: int) -> None:
        """Make [offset, offset+length) read as zeros, freeing the disk space when possible."""
        fd = self._fd(offset, length)
        if self.media_errors:
            self._remap(offset, length)
        if length <= 0:
            return
        try:
            punch_hole(fd, METADATA_BYTES + offset, length)
        except OSError:
            zero = bytes(min(length, 1 << 20))
            pos = offset
            end = offset + length
            while pos < end:
                n = min(len(zero), end - pos)
                self.write(pos, zero[:n])
                pos += n

    # ------------------------------------------------------------ metadata
    def read_record(self) -> DriveRecord | None:
        if self.fd is None:
            return None
        a = os.pread(self.fd, SLOT_BYTES, 0)
        b = os.pread(self.fd, SLOT_BYTES, SLOT_BYTES)
        rec, next_slot = read_best(a, b)
        self.meta_slot = next_slot
        if rec is not None:
            self.meta_seq = rec.seq
        return rec

    def write_record(self, record: DriveRecord) -> None:
        """Write into the older slot; the other keeps the previous record."""
        if self.fd is None or self.failed:
            return
        self.meta_seq += 1
        record.seq = self.meta_seq
        raw = encode(record, self.meta_slot)
        os.pwrite(self.fd, raw, self.meta_slot * SLOT_BYTES)
        self.meta_slot = 1 - self.meta_slot
        self.blank = False

    # ------------------------------------------------------------- faults
    def add_media_error(self, offset: int, length: int) -> None:
        if offset < 0 or length <= 0 or offset + length > self.data_bytes:
            raise EnclosureError(
                f"media error range {offset}+{length} outside the drive's {self.data_bytes}-byte data area"
            )
        self.media_errors.append(MediaError(offset, length))

    def clear_faults(self) -> None:
        self.media_errors.clear()
        self.latency_ms = 0.0
        self.predictive = False


def read_identity(path: Path) -> DriveRecord | None:
    """The record on an image file that is not open (a pulled drive)."""
    try:
        with open(path, "rb") as f:
            a = f.read(SLOT_BYTES)
            b = f.read(SLOT_BYTES)
    except OSError:
        return None
    try:
        rec, _ = read_best(a, b)
    except MetadataError:
        return None
    return rec


class Enclosure:
    """Bays 1-14, pulled drives kept aside, power supplies, fans and temperature."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.bays: dict[int, Drive | None] = dict.fromkeys(range(1, BAY_COUNT + 1))
        self.aside: dict[str, Drive] = {}
        self.psus = [ComponentState.OK] * PSU_COUNT
        self.fans = [ComponentState.OK] * FAN_COUNT
        self.temperature_c = 24.0
        self.on_remap: Callable[[Drive], None] | None = None  # handed to every drive it opens

    def _remapped(self, drive: Drive) -> None:
        if self.on_remap is not None:
            self.on_remap(drive)

    # ------------------------------------------------------------- discovery
    def scan(self) -> list[Drive]:
        """Open every drive image in the state directory; blank ones get `blank` set."""
        found: list[Drive] = []
        for path in sorted(self.state_dir.iterdir()):
            m = _BAY_FILE.match(path.name)
            if m:
                bay = int(m.group(1))
                if not 1 <= bay <= BAY_COUNT:
                    continue
                drive = Drive(path, "", 0, path.stat().st_size)
                drive.on_remap = self._remapped
                drive.open(path)
                rec = drive.read_record()
                if rec is not None:
                    drive.serial, drive.wwid = rec.serial, rec.wwid
                else:
                    drive.blank = True
                drive.bay = bay
                self.bays[bay] = drive
                found.append(drive)
                continue
            m = _PULLED_FILE.match(path.name)
            if m:
                rec = read_identity(path)
                serial = m.group(2)
                drive = Drive(path, serial, rec.wwid if rec else 0, path.stat().st_size)
                drive.on_remap = self._remapped
                drive.last_bay = int(m.group(1))
                if rec is None:
                    drive.blank = True
                self.aside[serial] = drive
                found.append(drive)
        return found

    # ------------------------------------------------------------- queries
    def drive(self, bay: int) -> Drive | None:
        self._check_bay(bay)
        return self.bays[bay]

    def present(self) -> list[Drive]:
        return [d for d in self.bays.values() if d is not None]

    def find(self, serial: str) -> Drive | None:
        for d in self.bays.values():
            if d is not None and d.serial == serial:
                return d
        return self.aside.get(serial)

    @staticmethod
    def _check_bay(bay: int) -> None:
        if not isinstance(bay, int) or not 1 <= bay <= BAY_COUNT:
            raise EnclosureError(f"bay {bay} outside 1..{BAY_COUNT}")

    # ------------------------------------------------------------- hot plug
    def new_drive(self, bay: int, size_bytes: int, serial: str, wwid: int) -> Drive:
        """A factory-fresh (blank, sparse) drive in an empty bay."""
        self._check_bay(bay)
        if self.bays[bay] is not None:
            raise EnclosureError(f"bay {bay} is occupied")
        if size_bytes < METADATA_BYTES + (1 << 20) or size_bytes % BLOCK:
            raise EnclosureError(f"drive size {size_bytes} too small or not a multiple of {BLOCK}")
        path = bay_path(self.state_dir, bay)
        if path.exists():
            path.unlink()
        drive = Drive(path, serial, wwid, size_bytes)
        drive.on_remap = self._remapped
        drive.open(path)
        drive.blank = True
        drive.bay = bay
        self.bays[bay] = drive
        return drive

    def pull(self, bay: int) -> Drive:
        """Remove the drive from `bay`; its image is kept aside under its serial."""
        drive = self.drive(bay)
        if drive is None:
            raise EnclosureError(f"bay {bay} is empty")
        drive.close()
        dest = pulled_path(self.state_dir, drive.serial, bay)
        os.replace(drive.path, dest)
        drive.path = dest
        drive.bay = None
        drive.last_bay = bay
        self.bays[bay] = None
        self.aside[drive.serial] = drive
        return drive

    def insert(self, bay: int, serial: str) -> Drive:
        """Put a pulled drive back, into `bay` (its old one or another)."""
        self._check_bay(bay)
        if self.bays[bay] is not None:
            raise EnclosureError(f"bay {bay} is occupied")
        drive = self.aside.pop(serial, None)
        if drive is None:
            raise EnclosureError(f"no pulled drive with serial {serial}")
        dest = bay_path(self.state_dir, bay)
        os.replace(drive.path, dest)
        drive.open(dest)
        drive.read_record()
        drive.bay = bay
        self.bays[bay] = drive
        return drive

    def discard(self, bay: int) -> Drive:
        """Throw the drive in `bay` away (a failed drive being replaced)."""
        drive = self.drive(bay)
        if drive is None:
            raise EnclosureError(f"bay {bay} is empty")
        drive.close()
        try:
            drive.path.unlink()
        except OSError:
            pass
        drive.bay = None
        self.bays[bay] = None
        return drive

    def close(self) -> None:
        for d in self.bays.values():
            if d is not None:
                d.close()
