"""One emulator per state directory: an flock on a lock file there that holds the owner's PID.

Two processes on one state directory would share the mapped cache and the drive images
and overwrite each other's acknowledged data. The lock is taken before the firmware opens
anything; the kernel drops it when the process ends, however it ends, so a stale file left
by a crash never blocks the next start (the file itself stays: removing it would race).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "msa500-emu.lock"
_PID_WIDTH = 16


class StateDirBusy(Exception):
    """Another running emulator holds the state directory."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid else "a process whose PID the lock file does not hold"
        super().__init__(f"state directory {state_dir} is in use by another msa500-emu ({who})")
        self.state_dir = state_dir
        self.pid = pid


class StateDirLock:
    """Held from `acquire()` until `release()` (or the end of the process)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        if self._fd >= 0:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            raise StateDirBusy(self.state_dir, int(text) if text.isdigit() else None) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:  # fixed width, in place: once the file has its block, a full disk cannot refuse this
            os.pwrite(fd, f"{os.getpid()}".ljust(_PID_WIDTH - 1).encode() + b"\n", 0)
            os.ftruncate(fd, _PID_WIDTH)
        except OSError:
            pass  # the lock holds all the same; a second emulator just cannot name this one

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the last descriptor drops the flock
