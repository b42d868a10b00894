"""python -m firmware_model.cache: the cache micro-benchmark in a temporary directory."""

import tempfile
from pathlib import Path

from .bench import benchmark
from .layout import CACHE_FILE

with tempfile.TemporaryDirectory() as tmp:
    for k, v in benchmark(Path(tmp) / CACHE_FILE).items():
        print(f"{k}: {v:,.0f}")
