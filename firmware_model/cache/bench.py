"""A Python micro-benchmark of the cache (run: python -m firmware_model.cache)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from .layout import BLOCK, LINE_BYTES, MIB
from .write_cache import WriteCache


def benchmark(path: Path, n: int = 50000) -> dict[str, float]:
    """Python micro-benchmark: 4 KiB random writes into a 128 MiB cache, and destaging them."""

    class _Null:
        block_size = BLOCK
        num_blocks = 1 << 24

        def __init__(self) -> None:
            self.written = 0
            self.writes = 0

        def read(self, lba: int, count: int) -> bytes:
            return bytes(count * BLOCK)

        def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
            self.written += len(data)
            self.writes += 1

        def flush(self) -> None:
            pass

    class _Clock:
        def now(self) -> float:
            return time.monotonic()

    cache = WriteCache(path, 128 * MIB, _Clock(), ratio_read_percent=0)
    cache.write_back = True
    vol = _Null()
    cache.attach(1, vol)
    rnd = random.Random(1)
    data = rnd.randbytes(LINE_BYTES)
    span = 1 << 21  # 8 GiB of lines
    lbas = [rnd.randrange(0, span) * 8 for _ in range(min(n, cache.max_dirty))]
    t0 = time.perf_counter()
    for lba in lbas:
        cache.write(1, lba, data)
    t1 = time.perf_counter()
    cache.destage_all()
    t2 = time.perf_counter()
    seq = rnd.sample(range(min(n, cache.max_dirty)), min(n, cache.max_dirty))  # shuffled, contiguous
    t3 = time.perf_counter()
    for i in seq:
        cache.write(1, i * 8, data)
    t4 = time.perf_counter()
    before = vol.writes
    cache.destage_all()
    t5 = time.perf_counter()
    over = [rnd.randrange(0, 4096) * 8 for _ in range(n)]  # overwrites of cached lines (copy on write)
    t6 = time.perf_counter()
    for lba in over:
        cache.write(1, lba, data)
    t7 = time.perf_counter()
    cache.close()
    return {
        "write_4k_new_lines_per_s": len(lbas) / (t1 - t0),
        "write_4k_overwrite_per_s": n / (t7 - t6),
        "destage_random_mb_per_s": len(lbas) * LINE_BYTES / MIB / (t2 - t1),
        "write_4k_shuffled_seq_per_s": len(seq) / (t4 - t3),
        "destage_coalesced_mb_per_s": len(seq) * LINE_BYTES / MIB / (t5 - t4),
        "coalesced_volume_writes": vol.writes - before,
    }
