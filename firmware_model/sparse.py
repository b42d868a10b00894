"""Sparse image files: deallocating a byte range (a hole reads back as zeros)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE); raises OSError where the file system cannot."""
    res = _libc().fallocate(
        ctypes.c_int(fd),
        ctypes.c_int(_FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE),
        ctypes.c_longlong(offset),
        ctypes.c_longlong(length),
    )
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
