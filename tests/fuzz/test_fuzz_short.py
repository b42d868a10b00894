"""Each fuzz target runs a few seconds under atheris (scripts/fuzz TARGET 5) and finds no crash; every
seed input replays cleanly without atheris."""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fuzz.targets import NAMES

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.fixture
def target_logging() -> Iterator[None]:
    """A target takes over the emulator's loggers to catch internal errors (targets/_errors.py):
    give them back afterwards, or every later test in this process logs nowhere."""
    log = logging.getLogger("msa500_emu")
    handlers, propagate, level = log.handlers[:], log.propagate, log.level
    yield
    log.handlers[:] = handlers
    log.propagate = propagate
    log.setLevel(level)


@pytest.mark.parametrize("target", NAMES)
def test_every_seed_replays_without_a_crash(target: str, target_logging: None) -> None:
    seeds = sorted((CORPUS / target).iterdir())
    assert seeds, f"no seed corpus for {target}"
    # (re)loaded inside the fixture, so the target's logger capture is in place for its seeds
    module = importlib.reload(importlib.import_module(f"tests.fuzz.targets.{target}"))
    for seed in seeds:
        module.TestOneInput(seed.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("target", NAMES)
def test_a_short_fuzz_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz"), target, "5", "--out", str(tmp_path)],
                          capture_output=True, text=True, errors="replace", timeout=180, cwd=ROOT)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    m = re.match(rf"fuzz {target}: (\d+) executions in \d+ s, cov (\d+) ft \d+, no crash", summary)
    assert m, summary
    assert int(m.group(1)) > 100 and int(m.group(2)) > 50, summary
    assert not list((tmp_path / target / "crashes").iterdir())
