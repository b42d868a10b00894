"""The array accelerator: a write-back cache shared by every logical drive, in a mapped file.

The MSA500's 128 MB battery-backed cache is emulated by `cache.nvram` in the state directory,
mapped into memory: what is stored in the mapping is in the kernel's page cache the moment
the store retires, so `kill -9` of the emulator loses none of it. A WRITE is acknowledged
only after its data and a checksummed header are in the mapping.

One module per job:
  layout        the file: superblock, slot headers, geometry; create, reserve, scan (crash safety)
  settings      CacheSettings (what the operator sets), the read/write ratios, fixed tunings
  index         the line index: lines held, dirty lines oldest first, clean LRU, free slots, shares
  cache_file    the index in its mapped file: open and scan, resize, close; sealing line headers
  write_cache   WriteCache: read, write, destage, flush, losses, statistics
  cached_volume CachedVolume: a logical drive's volume through the cache
  bench         the micro-benchmark (python -m firmware_model.cache)
WriteCache extends CacheFile extends LineIndex, so the I/O path calls the bookkeeping directly.
"""

from .bench import benchmark
from .cached_volume import CachedVolume
from .index import _Line as _Line
from .layout import _CRC as _CRC
from .layout import _HDR as _HDR
from .layout import _SUPER as _SUPER
from .layout import _ZERO8 as _ZERO8
from .layout import (
    BLOCK,
    CACHE_FILE,
    FULL,
    HDR_BYTES,
    LINE_BLOCKS,
    LINE_BYTES,
    LINE_MASK,
    LUN_SHIFT,
    MAGIC,
    MIB,
    RUNS,
    SUPER_BYTES,
    VERSION,
    CacheError,
    ReplayResult,
)
from .layout import _crc as _crc
from .layout import _runs as _runs
from .settings import DESTAGE_DELAY, POPULATE_MAX_BLOCKS, RATIOS, STEP_BYTES, CacheSettings
from .write_cache import _NO_SPACE as _NO_SPACE
from .write_cache import Volume, WriteCache

__all__ = [
    "BLOCK",
    "CACHE_FILE",
    "DESTAGE_DELAY",
    "FULL",
    "HDR_BYTES",
    "LINE_BLOCKS",
    "LINE_BYTES",
    "LINE_MASK",
    "LUN_SHIFT",
    "MAGIC",
    "MIB",
    "POPULATE_MAX_BLOCKS",
    "RATIOS",
    "RUNS",
    "STEP_BYTES",
    "SUPER_BYTES",
    "VERSION",
    "CacheError",
    "CacheSettings",
    "CachedVolume",
    "ReplayResult",
    "Volume",
    "WriteCache",
    "benchmark",
]
