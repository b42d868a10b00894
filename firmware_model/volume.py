"""A logical drive's storage laid straight onto one extent of one bay's image file.

The simple layout of the foundation (RAID layouts replace it later, behind the same
BlockVolume protocol). Image files are sparse; unmapped extents are holes.
"""

from __future__ import annotations

import os

from .sparse import punch_hole

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


class ExtentVolume:
    """`num_blocks` blocks of `block_size` bytes at byte `offset` of an open image file."""

    def __init__(self, fd: int, offset: int, num_blocks: int, block_size: int = 512) -> None:
        self.fd = fd
        self.offset = offset
        self._num_blocks = num_blocks
        self.block_size = block_size

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    def _span(self, lba: int, count: int) -> tuple[int, int]:
        if lba < 0 or count < 0 or lba + count > self._num_blocks:
            raise ValueError(f"LBA range {lba}+{count} outside 0..{self._num_blocks}")
        return self.offset + lba * self.block_size, count * self.block_size

    def read(self, lba: int, count: int) -> bytes:
        pos, length = self._span(lba, count)
        data = os.pread(self.fd, length, pos)
        if len(data) < length:  # never-written tail of a sparse file reads as zeros
            data += bytes(length - len(data))
        return data

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        pos, length = self._span(lba, len(data) // self.block_size)
        view = memoryview(data)[:length]
        while view:
            n = os.pwrite(self.fd, view, pos)
            view = view[n:]
            pos += n

    def flush(self) -> None:
        os.fdatasync(self.fd)

    # Thin provisioning: holes in the sparse image are unmapped blocks.
    def unmap(self, lba: int, count: int) -> None:
        """Deallocate blocks: they read back as zeros (LBPRZ)."""
        pos, length = self._span(lba, count)
        if length == 0:
            return
        try:
            punch_hole(self.fd, pos, length)
        except OSError:
            os.pwrite(self.fd, bytes(length), pos)

    def mapping(self, lba: int) -> tuple[bool, int]:
        """(mapped, run length in blocks) of the extent that starts at `lba`."""
        pos, _ = self._span(lba, 1)
        end = self.offset + self._num_blocks * self.block_size
        bs = self.block_size
        try:
            data = os.lseek(self.fd, pos, SEEK_DATA)
        except OSError:  # ENXIO: no data past pos
            return False, self._num_blocks - lba
        if data > pos:
            stop = min(data, end)
            run = max(1, (stop - pos) // bs)
            return False, run
        hole = os.lseek(self.fd, pos, SEEK_HOLE)
        stop = min(hole, end)
        run = max(1, -(-(stop - pos) // bs))
        return True, min(run, self._num_blocks - lba)
