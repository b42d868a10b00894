"""Shared fixtures: a real emulator process on free loopback ports, with temp state (via the msa500 plugin)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The array handle and start_array live in the pytest plugin this project ships
# (msa500_emu.testing, loaded through its pytest11 entry point); re-exported for the tests.
from msa500_emu.testing import RunningArray, start_array

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOOLS = ROOT.parent / "shared" / "tools"

__all__ = ["ROOT", "SHARED_TOOLS", "RunningArray", "array", "need", "start_array"]


@pytest.fixture(scope="session")
def array(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    """One emulator for the session's integration tests (default shelf, small LUN 1)."""
    d = tmp_path_factory.mktemp("array")
    cfg = d / "shelf.toml"
    cfg.write_text(
        '[shelf]\nserial = "CITEST0001"\n'
        '[[shelf.logical_drives]]\nlun = 1\nbay = 1\nsize = "1GiB"\nname = "test"\n'
        '[[shelf.logical_drives]]\nlun = 2\nbay = 2\nsize = "64MiB"\nname = "scratch"\n'
    )
    running = start_array(d / "state", cfg)
    yield running
    assert running.stop() == 0, running.log.read_text()


@pytest.fixture(autouse=True)
def _release_controllers() -> Iterator[None]:
    """After each test, the descriptors of the controllers it opened and never closed (a kill)."""
    yield
    helpers = sys.modules.get("tests.unit.shelf_helpers")
    if helpers is not None:
        helpers.release_opened()


def need(tool: str) -> str:
    import shutil

    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/setup (Debian packages)")
    return path
