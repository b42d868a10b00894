"""The TOML config loader: the input written as the config file, loaded, and its shelf spec
checked as `msa500-emu serve` checks it. ConfigError is the answer; anything else a crash."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from msa500_emu.config import ConfigError, load

MAX_LEN = 8192  # the longest input libFuzzer tries (scripts/fuzz -max_len)

_DIR = Path(tempfile.mkdtemp(prefix="msa500-fuzz-config-"))
atexit.register(shutil.rmtree, _DIR, True)
_FILE = _DIR / "msa500.toml"


def TestOneInput(data: bytes) -> None:
    _FILE.write_bytes(data)
    try:
        load(_FILE, {})
    except ConfigError:
        pass
