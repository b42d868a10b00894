"""The accelerator's file, `cache.nvram`: its layout, and creating, reserving and scanning it.

File layout (little endian):
  [0, 4096)          superblock: magic b"MSA5ACC1", version, line bytes, slot count, CRC32C
  [4096, data_base)  slot headers, 32 bytes each:
                       0  u64 seq    (0: the slot holds no unwritten data)
                       8  u64 lba    first LBA of the line (a multiple of 8)
                       16 u16 lun
                       18 u8  dirty  bitmap of the line's blocks not yet on the drives
                       24 u32 crc    CRC32C over header bytes 0-23 then the 4 KiB of data
  [data_base, ...)   slot data, 4 KiB (8 blocks) each; data_base is 4 KiB aligned

Crash safety: the only valid copy of an acknowledged block is never overwritten in place.
A write to a line with unwritten data goes to a free slot (old data copied, new blocks on
top, header with a higher seq written last), and only then is the old slot's header cleared.
A clean line (its data is on the drives; no header) may be updated in place. On start
every slot with a good CRC is read; per line the highest seq wins; a torn slot (bad CRC)
was never acknowledged and is ignored; the survivors are written to the drives.

A line is keyed in memory by `lun << LUN_SHIFT | lba // LINE_BLOCKS`.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import crc32c

CACHE_FILE = "cache.nvram"
BLOCK = 512
LINE_BLOCKS = 8
LINE_BYTES = BLOCK * LINE_BLOCKS
FULL = (1 << LINE_BLOCKS) - 1
HDR_BYTES = 32
SUPER_BYTES = 4096
MAGIC = b"MSA5ACC1"
VERSION = 1
MIB = 1 << 20
LUN_SHIFT = 48
LINE_MASK = (1 << LUN_SHIFT) - 1

_SUPER = struct.Struct("<8sIII")
_HDR = struct.Struct("<QQHB5x")  # 24 bytes, then u32 crc, then 4 bytes zero
_CRC = struct.Struct("<I")
_ZERO8 = bytes(8)
_crc = crc32c.crc32c


def _runs(mask: int) -> tuple[tuple[int, int], ...]:
    """Contiguous (start, end) block runs set in `mask`."""
    out: list[tuple[int, int]] = []
    b = 0
    while b < LINE_BLOCKS:
        if mask >> b & 1:
            s = b
            while b < LINE_BLOCKS and mask >> b & 1:
                b += 1
            out.append((s, b))
        else:
            b += 1
    return tuple(out)


RUNS: tuple[tuple[tuple[int, int], ...], ...] = tuple(_runs(m) for m in range(FULL + 1))


class CacheError(Exception):
    """A cache file that cannot be used, or a setting refused."""


@dataclass
class ReplayResult:
    lines: int = 0
    blocks: int = 0
    torn: int = 0
    superseded: int = 0
    per_lun: dict[int, int] | None = None


@dataclass
class Scan:
    """What the slot headers of a file hold."""

    lines: list[tuple[int, int, int]] = field(default_factory=list)  # (key, slot, mask), oldest first
    free: list[int] = field(default_factory=list)  # the other slots, highest first
    seq: int = 0  # the highest seq found
    torn: int = 0  # slots with a bad CRC (never acknowledged); their headers are cleared
    superseded: int = 0  # older copies of a line; their headers are cleared


def geometry(slots: int) -> tuple[int, int]:
    """(data_base, file size) of a file of `slots` slots."""
    hdr = -(-slots * HDR_BYTES // 4096) * 4096
    data_base = SUPER_BYTES + hdr
    return data_base, data_base + slots * LINE_BYTES


def reserve(path: Path, fd: int, total: int) -> None:
    """Allocate every block of the file `fd` (at `path`) now (holes become zeros that cost their space).

    A store into a hole of a mapping is a page fault the file system must back; when it
    is full, the kernel answers SIGBUS and the process dies without a word. Reserved at
    creation (and checked at each start), the mapping never needs a new block.
    """
    try:
        os.posix_fallocate(fd, 0, total)
    except OSError as exc:
        try:
            st = os.statvfs(path.parent)
            free = f"{st.f_bavail * st.f_frsize / MIB:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        raise CacheError(f"cannot reserve {total / MIB:.1f} MiB for the cache on its file system "
                         f"({free}): {exc.strerror or exc}") from exc


def create(path: Path, slots: int) -> None:
    """A new empty file of `slots` slots, its space reserved, put in place of `path` atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _, total = geometry(slots)
        os.ftruncate(fd, total)
        reserve(path, fd, total)
        sup = _SUPER.pack(MAGIC, VERSION, LINE_BYTES, slots)
        os.pwrite(fd, sup + _CRC.pack(_crc(sup)), 0)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def read_super(path: Path) -> int | None:
    """The slot count of the file at `path`; None if there is no usable file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_SUPER.size + 4)
    except FileNotFoundError:
        return None
    if len(raw) < _SUPER.size + 4:
        return None
    magic, version, line, slots = _SUPER.unpack_from(raw)
    (crc,) = _CRC.unpack_from(raw, _SUPER.size)
    if magic != MAGIC or version != VERSION or line != LINE_BYTES or crc != _crc(raw[: _SUPER.size]):
        return None  # written only when the cache is empty: nothing to lose
    if slots <= 0 or os.path.getsize(path) < geometry(slots)[1]:
        return None
    return int(slots)


def scan(mm: mmap.mmap, mv: memoryview, slots: int, hdr_base: int, data_base: int) -> Scan:
    """Read every header: per line the valid slot of the highest seq; torn and superseded slots
    have their headers cleared and are free with the empty ones."""
    best: dict[int, tuple[int, int, int]] = {}  # key -> (seq, slot, mask)
    out = Scan()
    free = out.free
    top = 0
    hb, db = hdr_base, data_base
    for slot in range(slots):
        h = hb + slot * HDR_BYTES
        if mm[h : h + 8] == _ZERO8:
            free.append(slot)
            continue
        seq, lba, lun, mask = _HDR.unpack_from(mm, h)
        (crc,) = _CRC.unpack_from(mm, h + 24)
        d = db + slot * LINE_BYTES
        if (crc != _crc(mv[d : d + LINE_BYTES], _crc(mv[h : h + 24])) or mask == 0 or mask > FULL
                or lba % LINE_BLOCKS):
            out.torn += 1  # never acknowledged
            mm[h : h + HDR_BYTES] = bytes(HDR_BYTES)
            free.append(slot)
            continue
        top = max(top, seq)
        key = lun << LUN_SHIFT | lba // LINE_BLOCKS
        old = best.get(key)
        if old is not None:
            out.superseded += 1
            loser = old if old[0] < seq else (seq, slot, mask)
            winner = (seq, slot, mask) if old[0] < seq else old
            lh = hb + loser[1] * HDR_BYTES
            mm[lh : lh + HDR_BYTES] = bytes(HDR_BYTES)
            free.append(loser[1])
            best[key] = winner
        else:
            best[key] = (seq, slot, mask)
    out.seq = top
    out.lines = [(key, slot, mask) for key, (_seq, slot, mask) in sorted(best.items(), key=lambda kv: kv[1][0])]
    free.sort(reverse=True)
    return out
