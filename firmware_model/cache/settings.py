"""What the operator sets for the accelerator (ACU / SET CACHE), and the firmware's fixed tunings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .layout import MIB

RATIOS = (0, 25, 50, 75, 100)  # the read shares ACU offers, in percent
STEP_BYTES = 4 * MIB  # background destage: at most this much per step
# Smart Array's write cache bypass threshold: a write this large (1 MiB) or larger goes straight to
# the drives (write-through: on the drive images when it is acknowledged), as a streaming write
# gains nothing from the cache and costs a copy in and a destage out (scripts/bench --shelf). On a
# parity volume only its whole stripes do: the partial ones at its ends are cached like any write.
BYPASS_BLOCKS = 2048
FLUSH_STEP_LINES = 256  # SYNCHRONIZE CACHE run in steps: lines (4 KiB each) destaged per step
DESTAGE_DELAY = 0.05  # seconds dirty data may wait before the background destage starts
POPULATE_MAX_BLOCKS = 512  # reads up to 256 KiB fill the read cache; longer ones stream past


@dataclass
class CacheSettings:
    """What the operator sets (ACU / SET CACHE) and the shelf's build (the TOML config)."""

    size_mb: int = 128
    ratio_read_percent: int = 50
    enabled: bool = True
    force_write_back: bool = False  # ACU's "no-battery write cache": write-back without a battery
    holdup_s: float = 4 * 86400.0
    charge_s: float = 600.0
    spinup_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: CacheSettings | None = None) -> CacheSettings:
        out = cls(**asdict(base)) if base is not None else cls()
        names = {f.name for f in fields(cls)}
        for k, v in raw.items():
            if k in names:
                setattr(out, k, v)
        return out
