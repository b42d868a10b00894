"""Blocks of a logical drive that the array could not reconstruct, kept until they are written.

A rebuild, copy-back, expansion or degraded read that finds a block neither its drive nor the
redundancy can give records it here (the RAID engine settles such a block as zeros so parity
stays consistent). A read that covers one answers MEDIUM ERROR 03/11/00 with the first such LBA
in INFORMATION; a write over it heals it. The ranges live in the logical drive's configuration
record (`LdConfig.lost`, pairs of first LBA and count), so they survive restarts with the rest
of the configuration.
"""

from __future__ import annotations

from bisect import bisect_right

MAX_RANGES = 1024  # beyond this the two closest ranges merge: more blocks answer errors, none lies


class LostBlocks:
    """Sorted, disjoint [first, count] ranges, kept in the list it is given (the config's)."""

    def __init__(self, ranges: list[list[int]]) -> None:
        self.ranges = ranges
        merged = self._normal([(int(a), int(a) + int(n)) for a, n in ranges if int(n) > 0])
        ranges[:] = [[a, b - a] for a, b in merged]

    @staticmethod
    def _normal(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for a, b in sorted(spans):
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out

    def _spans(self) -> list[tuple[int, int]]:
        return [(a, a + n) for a, n in self.ranges]

    def _store(self, spans: list[tuple[int, int]]) -> None:
        while len(spans) > MAX_RANGES:
            gaps = [(spans[i + 1][0] - spans[i][1], i) for i in range(len(spans) - 1)]
            _, i = min(gaps)
            spans[i : i + 2] = [(spans[i][0], spans[i + 1][1])]
        self.ranges[:] = [[a, b - a] for a, b in spans]

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.ranges)

    def add(self, lba: int, count: int) -> int:
        """Record blocks [lba, lba+count) lost; how many were not recorded before."""
        before = self.total
        self._store(self._normal([*self._spans(), (lba, lba + count)]))
        return self.total - before

    def first_in(self, lba: int, count: int) -> int | None:
        """The first lost block in [lba, lba+count), if any."""
        if not self.ranges:
            return None
        end = lba + count
        i = max(0, bisect_right(self.ranges, [lba, 1 << 62]) - 1)
        for a, n in self.ranges[i:]:
            if a >= end:
                return None
            if a + n > lba:
                return max(a, lba)
        return None

    def heal(self, lba: int, count: int) -> int:
        """Forget blocks [lba, lba+count) (they were written); how many were lost."""
        if self.first_in(lba, count) is None:
            return 0
        end = lba + count
        out: list[tuple[int, int]] = []
        for a, b in self._spans():
            if b <= lba or a >= end:
                out.append((a, b))
                continue
            if a < lba:
                out.append((a, lba))
            if b > end:
                out.append((end, b))
        before = self.total
        self._store(out)
        return before - self.total
