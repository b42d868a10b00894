"""Which files of a state directory are the shelf, and copying them without making them dense.

A drive image is a sparse file of tens of GiB holding a few MiB; a copy must stay as small.
`copy_file` asks the file system for a reflink first (ioctl FICLONE: btrfs, XFS, bcachefs share
the blocks until either side writes), and otherwise copies only the data extents that
SEEK_DATA/SEEK_HOLE report, so holes stay holes. The cache file is reserved whole while the
array runs (firmware_model.cache.layout.reserve), so its extents are mostly zeros: it is copied
skipping zero chunks, and reserved again when the controller opens the restored copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from firmware_model.cache import CACHE_FILE
from firmware_model.controller.expansion import JOURNAL_FILE as EXPAND_JOURNAL_FILE
from firmware_model.controller.nvram import NVRAM_FILE
from firmware_model.controller.pr_store import PR_FILE
from firmware_model.enclosure import _BAY_FILE, _PULLED_FILE, SEEK_DATA, SEEK_HOLE
from firmware_model.events import EVENTS_FILE
from firmware_model.write_journal import INTENT_FILE
from firmware_model.write_journal import JOURNAL_FILE as MEMBER_JOURNAL_FILE

from ..alerting.settings import ALERTS_FILE

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
CHUNK = 1 << 20
ZERO_CHUNK = 64 << 10  # the granularity of the zero test of files copied with skip_zeros
_ZEROS = bytes(ZERO_CHUNK)
#: the controller's own files, besides the drive images (bayNN.img, pulled-NN-serial.img)
FIXED = (NVRAM_FILE, CACHE_FILE, EVENTS_FILE, INTENT_FILE, MEMBER_JOURNAL_FILE, EXPAND_JOURNAL_FILE, PR_FILE,
         ALERTS_FILE)
SKIP_ZEROS = frozenset({CACHE_FILE})  # reserved whole while in use: its zeros are not data
_NO_REFLINK = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EBADF}


def is_shelf_file(name: str) -> bool:
    """A file the controller (or the alert service's SET ALERTS) owns in the state directory."""
    return name in FIXED or bool(_BAY_FILE.match(name) or _PULLED_FILE.match(name))


def shelf_files(state_dir: Path) -> list[Path]:
    """The shelf's files present in `state_dir` (not the lock, the API token or the snapshots)."""
    return sorted(p for p in state_dir.iterdir() if p.is_file() and is_shelf_file(p.name))


@dataclass
class Copied:
    name: str
    size: int  # apparent size, bytes
    stored: int  # bytes the copy occupies on its file system (st_blocks)
    method: str  # "reflink" or "sparse"


def copy_file(src: Path, dst: Path) -> Copied:
    """`src` to the new file `dst`: a reflink where the file system allows, else its data only."""
    skip_zeros = src.name in SKIP_ZEROS
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            method = "sparse"
            if not skip_zeros and _reflink(fin, fout):
                method = "reflink"
            else:
                size = os.fstat(fin).st_size
                os.ftruncate(fout, size)
                for start, end in data_extents(fin, size):
                    (_copy_nonzero if skip_zeros else _copy_range)(fin, fout, start, end)
            st = os.fstat(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return Copied(src.name, st.st_size, st.st_blocks * 512, method)


def allocated(paths: list[Path]) -> int:
    """Bytes a copy without reflinks has to write: the files' blocks (the cache file's zeros not)."""
    return sum(p.stat().st_blocks * 512 for p in paths if p.name not in SKIP_ZEROS)


def can_reflink(directory: Path) -> bool:
    """Whether files in `directory` can be reflinked (tried on two scratch files)."""
    a, b = directory / ".reflink-probe-a", directory / ".reflink-probe-b"
    try:
        a.write_bytes(b"probe")
        fin, fout = os.open(a, os.O_RDONLY), os.open(b, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            return _reflink(fin, fout)
        finally:
            os.close(fin)
            os.close(fout)
    except OSError:
        return False
    finally:
        a.unlink(missing_ok=True)
        b.unlink(missing_ok=True)


def _reflink(fin: int, fout: int) -> bool:
    try:
        fcntl.ioctl(fout, FICLONE, fin)
        return True
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges holding data; the whole file where SEEK_DATA is not offered."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            return [(0, size)] if exc.errno == errno.EINVAL and pos == 0 else [*out, (pos, size)]
        end = min(os.lseek(fd, start, SEEK_HOLE), size)
        out.append((start, end))
        pos = end
    return out


def _copy_range(fin: int, fout: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        n = end - pos
        try:
            done = os.copy_file_range(fin, fout, min(n, 1 << 30), pos, pos)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = 0
        if done <= 0:  # no kernel copy here (or an early end): by hand
            data = os.pread(fin, min(n, CHUNK), pos)
            if not data:
                return
            os.pwrite(fout, data, pos)
            done = len(data)
        pos += done


def _copy_nonzero(fin: int, fout: int, start: int, end: int) -> None:
    pos = start
    while pos < end:
        data = os.pread(fin, min(end - pos, CHUNK), pos)
        if not data:
            return
        view = memoryview(data)
        for off in range(0, len(data), ZERO_CHUNK):
            part = view[off:off + ZERO_CHUNK]
            if part != _ZEROS[:len(part)]:
                os.pwrite(fout, part, pos + off)
        pos += len(data)
