"""CachedVolume: a logical drive's volume as its BlockUnit sees it, through the shared cache."""

from __future__ import annotations

from collections.abc import Generator

from ..scsi.stepped import Wait
from .write_cache import Volume, WriteCache


class CachedVolume:
    """What a logical drive's BlockUnit sees: the drive's LdVolume behind the shared cache."""

    def __init__(self, cache: WriteCache, lun: int, inner: Volume) -> None:
        self.cache = cache
        self.lun = lun
        self.inner = inner
        self.block_size = inner.block_size
        cache.attach(lun, inner)

    @property
    def num_blocks(self) -> int:
        return self.inner.num_blocks

    def read(self, lba: int, count: int) -> bytes:
        return self.cache.read(self.lun, lba, count)

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        self.cache.write(self.lun, lba, data)

    def flush(self) -> None:
        self.cache.flush(self.lun)

    def flush_range(self, lba: int, count: int | None) -> None:
        self.cache.flush(self.lun, lba, count)

    def flush_steps(self, lba: int, count: int | None) -> Generator[Wait, None, None]:
        return self.cache.flush_steps(self.lun, lba, count)
