"""What keeps a RAID write crash-consistent: a write-intent log and a member-write journal.

The RAID 5/ADG write hole: a write updates data chunks and then P/Q; killed in between, the row's
parity disagrees with its data, and the next drive failure reconstructs garbage for blocks that
were acknowledged long ago. The MSA500's battery-backed cache closes it on the product; here:

- `IntentLog` (`write-intent.bin`, a small file mapped into memory, so a store survives kill -9
  the moment it retires): every logical-drive write records (LUN, LBA, count) before it touches
  a member, then, before the first member write of each row, that row's member byte range (rows
  before it are complete, rows after it untouched), and clears the record when done. At start,
  the row a write was in gets its redundancy recomputed from the data (P/Q, or the mirror copies
  from the first one), which is right whichever of the old or new data each member holds: the
  write was never acknowledged. No row recorded: nothing was written. A torn row record: every
  row of the write is recomputed.
- Rebuild watermarks, in the same mapped file: how far each rebuild or copy-back has got, stored
  after every step (NVRAM is written only every few steps), so a restart does not redo rows that
  were rebuilt while their sources were whole.
- `MemberJournal` (`member-journal.bin`): while a parity volume is degraded its parity cannot be
  recomputed from the data (a data chunk exists only as parity), so the member writes of such an
  operation are written here in full first, then applied; at start a complete journal is applied
  again (idempotent), a torn one was never begun.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import crc32c

INTENT_FILE = "write-intent.bin"
JOURNAL_FILE = "member-journal.bin"
SLOTS = 64
_REC = struct.Struct("<QQII")  # seq, lba, lun, count; then u32 crc, 4 bytes zero
_ROW = struct.Struct("<QQI")  # at byte 32: row start, row end (member data-area bytes), crc
REC_BYTES = 64
ROW_AT = 32
NEW_LAYOUT = 1 << 63  # in a row's start: the row is in the new layout of an expanding logical drive
NO_ROW = (0, 0)  # the write touched no member yet
ANY_ROW = None  # the row record is torn: any row of the write
MARKS = 16  # rebuild watermarks after the intent slots: drive serial (16 bytes), u64 mark, u32 crc
_MARK = struct.Struct("<16sQI")
MARK_BYTES = 32
FILE_BYTES = SLOTS * REC_BYTES + MARKS * MARK_BYTES
_JHDR = struct.Struct("<8sIIQI")  # magic, lun, entries, body bytes, body crc; then u32 header crc
JHDR_BYTES = 32
_JENT = struct.Struct("<16sQI")  # drive serial, offset into its data area, length
MAGIC = b"MSA5JRNL"


class IntentLog:
    """Ranges of logical drives with a write under way."""

    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / INTENT_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < FILE_BYTES:
                os.posix_fallocate(fd, 0, FILE_BYTES)  # no SIGBUS on a full file system later
            self._mm: mmap.mmap | None = mmap.mmap(fd, FILE_BYTES)
        finally:
            os.close(fd)
        self._free = list(range(SLOTS - 1, -1, -1))
        self._seq = 0

    def pending(self) -> list[tuple[int, int, int, tuple[int, int] | None]]:
        """(LUN, LBA, count, row) of every write that was under way when the process stopped;
        row: the member byte range it was writing (start | NEW_LAYOUT in an expanding logical
        drive's new layout), NO_ROW, or ANY_ROW (None) when unknown."""
        mm = self._mm
        assert mm is not None
        out = []
        for i in range(SLOTS):
            raw = mm[i * REC_BYTES : i * REC_BYTES + 24]
            seq, lba, lun, count = _REC.unpack(raw)
            (crc,) = struct.unpack_from("<I", mm, i * REC_BYTES + 24)
            if seq and crc == crc32c.crc32c(raw):
                lo, hi, rcrc = _ROW.unpack_from(mm, i * REC_BYTES + ROW_AT)
                row = (lo, hi) if rcrc == crc32c.crc32c(struct.pack("<QQQ", seq, lo, hi)) else ANY_ROW
                out.append((lun, lba, count, row))
                self._seq = max(self._seq, seq)
        return out

    def clear(self) -> None:
        """Forget the write records (after recovery); the rebuild watermarks stay."""
        mm = self._mm
        assert mm is not None
        mm[: SLOTS * REC_BYTES] = bytes(SLOTS * REC_BYTES)
        self._free = list(range(SLOTS - 1, -1, -1))

    # ---------------------------------------------------------------- rebuild watermarks
    def _marks(self) -> dict[str, tuple[int, int]]:
        """serial -> (slot, mark) of the watermarks with a good checksum."""
        mm = self._mm
        assert mm is not None
        out: dict[str, tuple[int, int]] = {}
        for i in range(MARKS):
            at = SLOTS * REC_BYTES + i * MARK_BYTES
            raw, mark, crc = _MARK.unpack_from(mm, at)
            if raw.strip(b"\0") and crc == crc32c.crc32c(raw + struct.pack("<Q", mark)):
                out[raw.rstrip(b"\0").decode(errors="replace")] = (i, mark)
        return out

    def mark(self, serial: str) -> int | None:
        """How far the rebuild onto drive `serial` had got, if recorded."""
        got = self._marks().get(serial)
        return got[1] if got is not None else None

    def set_mark(self, serial: str, mark: int) -> None:
        """Record the rebuild watermark of drive `serial` (dropped when every place is taken)."""
        mm = self._mm
        assert mm is not None
        marks = self._marks()
        slot = marks[serial][0] if serial in marks else next(
            (i for i in range(MARKS) if i not in {x for x, _ in marks.values()}), None)
        if slot is None:
            return
        raw = serial.encode()[:16].ljust(16, b"\0")
        _MARK.pack_into(mm, SLOTS * REC_BYTES + slot * MARK_BYTES, raw, mark,
                        crc32c.crc32c(raw + struct.pack("<Q", mark)))

    def drop_mark(self, serial: str) -> None:
        got = self._marks().get(serial)
        if got is not None:
            mm = self._mm
            assert mm is not None
            at = SLOTS * REC_BYTES + got[0] * MARK_BYTES
            mm[at : at + MARK_BYTES] = bytes(MARK_BYTES)

    def begin(self, lun: int, lba: int, count: int) -> int:
        """Record a write about to start; its slot (-1: every slot holds a write that failed in
        the middle and stays recorded for the next start; this one goes unrecorded)."""
        mm = self._mm
        assert mm is not None
        if not self._free:
            return -1
        slot = self._free.pop()
        self._seq += 1
        raw = _REC.pack(self._seq, lba, lun, count)
        base = slot * REC_BYTES
        mm[base : base + ROW_AT] = raw + struct.pack("<I", crc32c.crc32c(raw)) + bytes(4)
        self._row(slot, *NO_ROW)
        return slot

    def row(self, slot: int, start: int, end: int, new_layout: bool = False) -> None:
        """The write of `slot` is about to write member bytes [start, end) of one row."""
        if slot >= 0:
            self._row(slot, start | (NEW_LAYOUT if new_layout else 0), end)

    def _row(self, slot: int, start: int, end: int) -> None:
        mm = self._mm
        assert mm is not None
        base = slot * REC_BYTES
        (seq,) = struct.unpack_from("<Q", mm, base)
        _ROW.pack_into(mm, base + ROW_AT, start, end, crc32c.crc32c(struct.pack("<QQQ", seq, start, end)))

    def end(self, slot: int) -> None:
        mm = self._mm
        assert mm is not None
        if slot < 0:
            return
        mm[slot * REC_BYTES : slot * REC_BYTES + 8] = bytes(8)
        self._free.append(slot)

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None


class MemberJournal:
    """Full member writes of one degraded parity operation, written before they are applied."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / JOURNAL_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._armed = False

    def record(self, lun: int, entries: Sequence[tuple[str, int, bytes | bytearray | memoryview]]) -> None:
        assert self._fd is not None
        parts: list[bytes | bytearray | memoryview] = []
        for serial, offset, data in entries:
            parts.append(_JENT.pack(serial.encode()[:16], offset, len(data)))
            parts.append(data)
        body = b"".join(parts)
        os.pwrite(self._fd, body, JHDR_BYTES)  # the body first: a torn journal has no valid header
        hdr = _JHDR.pack(MAGIC, lun, len(entries), len(body), crc32c.crc32c(body))
        os.pwrite(self._fd, hdr + struct.pack("<I", crc32c.crc32c(hdr)) + bytes(JHDR_BYTES - 4 - len(hdr)), 0)
        self._armed = True

    def clear(self) -> None:
        if self._armed and self._fd is not None:
            os.pwrite(self._fd, bytes(JHDR_BYTES), 0)
            self._armed = False

    def pending(self) -> tuple[int, list[tuple[str, int, bytes]]] | None:
        """(LUN, [(serial, offset, data)]) of a complete journal left by a stopped process."""
        assert self._fd is not None
        raw = os.pread(self._fd, JHDR_BYTES, 0)
        if len(raw) < JHDR_BYTES:
            return None
        magic, lun, n, length, body_crc = _JHDR.unpack_from(raw)
        (hdr_crc,) = struct.unpack_from("<I", raw, _JHDR.size)
        if magic != MAGIC or hdr_crc != crc32c.crc32c(raw[: _JHDR.size]):
            return None
        body = os.pread(self._fd, length, JHDR_BYTES)
        if len(body) != length or crc32c.crc32c(body) != body_crc:
            return None
        out = []
        pos = 0
        for _ in range(n):
            serial, offset, size = _JENT.unpack_from(body, pos)
            pos += _JENT.size
            out.append((serial.rstrip(b"\0").decode(), offset, body[pos : pos + size]))
            pos += size
        self._armed = True
        return lun, out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
