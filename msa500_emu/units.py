"""Sizes as people write them (8GB, 512MiB, 1.5T): one grammar for the TOML and the `ctl` language.

Units are binary whatever the spelling: K, KB, KiB = 2^10 bytes; M = 2^20; G = 2^30; T = 2^40;
B = bytes; case does not matter. Where they differ is a bare number, so the caller says which
unit that is: in the TOML (`config.py`) bytes, on the `ctl` command line (`commands.py`) MiB,
as the MSA CLI counted.
"""

from __future__ import annotations

import re

MULTIPLIERS = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
UNIT_NAMES = {"B": "bytes", "K": "KiB", "M": "MiB", "G": "GiB", "T": "TiB"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])I?B?|(B))?\s*$", re.IGNORECASE)


class SizeError(ValueError):
    """A size that cannot be read; the message names the problem (the caller adds where it was)."""


def parse_size(value: str | int, default_unit: str = "B") -> int:
    """Bytes from a size: a number with an optional binary unit, or a bare number (an integer or
    a string without unit) counted in `default_unit` ("B" in the TOML, "M" on the command line).
    Fractions are allowed and rounded down to a byte; the result must be positive."""
    mult = MULTIPLIERS[default_unit]
    if isinstance(value, int) and not isinstance(value, bool):
        n = value * mult
    elif isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise SizeError(f"{value!r} is not a size (e.g. 36GiB, 512MiB, 8GB; a bare number is "
                            f"{UNIT_NAMES[default_unit]})")
        if m.group(2):
            mult = MULTIPLIERS[m.group(2).upper()]
        elif m.group(3):
            mult = 1
        n = int(float(m.group(1)) * mult)
    else:
        raise SizeError(f"expected a size, got {type(value).__name__}")
    if n <= 0:
        raise SizeError("size must be positive")
    return n
