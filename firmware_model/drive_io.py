"""Drive reads on more than one core: preads that release the GIL, run by a small thread pool.

The firmware is single-threaded: the caller (the event loop's thread) plans a read, checks every
drive it touches (present, not failed, no media error in range) and then waits here while the
preads run, so no firmware state is touched by two threads and no image is closed under a read.
What runs in parallel is the kernel's side (copying page-cache pages, or allocating the pages of a
sparse image's holes), which is most of a large read's cost. One task per drive file: one drive's
ranges are read in order, different drives' at the same time.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

PARALLEL_MIN = 128 * 1024  # bytes: below this the thread handoff costs more than it gains
WORKERS = 4  # the machine this runs on has 2 cores; 4 keeps both busy while one thread waits

ReadJob = tuple[int, int, memoryview]  # (fd, absolute file offset, destination)

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="drive-io")
    return _pool


def _read_group(jobs: list[ReadJob]) -> None:
    for fd, pos, dest in jobs:
        want = dest.nbytes
        done = 0
        while done < want:  # short reads: beyond the image's end the destination keeps its zeros
            n = os.preadv(fd, [dest[done:]], pos + done)
            if n <= 0:
                break
            done += n


def read_all(jobs: list[ReadJob]) -> None:
    """Fill every destination from its file (zeros past the end); OSError as os.preadv raises it."""
    total = sum(dest.nbytes for _fd, _pos, dest in jobs)
    groups: dict[int, list[ReadJob]] = {}
    for job in jobs:
        groups.setdefault(job[0], []).append(job)
    if total < PARALLEL_MIN or len(groups) < 2:
        _read_group(jobs)
        return
    pool = _executor()
    rest = list(groups.values())
    mine = rest.pop()  # the caller's thread reads one group itself instead of idling
    futures: list[Future[None]] = [pool.submit(_read_group, g) for g in rest]
    error: BaseException | None = None
    try:
        _read_group(mine)
    except OSError as exc:
        error = exc
    for f in futures:  # wait for every one before returning: the destinations must not be written later
        try:
            f.result()
        except OSError as exc:
            error = error or exc
    if error is not None:
        raise error


def _sync(fds: list[int]) -> None:
    try:
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def sync_all(fds: list[int]) -> Future[None]:
    """fdatasync every fd (the caller's own duplicates, closed here) on a drive-I/O thread.

    Duplicates, so a drive pulled meanwhile closes only its own descriptor: the sync still reaches
    the image it was asked for, never a file that took the number."""
    return _executor().submit(_sync, fds)
