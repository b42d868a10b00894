"""pytest plugin: fixtures that give each test an emulated MSA500 (registered as `pytest11` entry point
`msa500`, so installing msa500-emu is enough).

Fixtures
  msa500           a fresh array per test (the marker's or `msa500_config`'s shelf), stopped after it
  msa500_factory   start several, or with a custom config: msa500_factory(config, mode=..., name=...);
                   msa500_factory.many(n) starts n at once, in parallel
  msa500_config    override it to pass a shelf (TOML text or a path) to `msa500`; default: built-in shelf
  msa500_shared    one array for the whole session (`msa500_shared_config` picks its shelf); RESET before
                   each test with ini msa500_shared_reset = true or @pytest.mark.msa500_reset
  msa500_mode      "subprocess" (default), "inprocess" or "container" (the Docker image, through
                   testcontainers: msa500_emu.testing.containers; image: ini msa500_image or $MSA500_IMAGE)
  msa500_guest     msa500_guest(array, script, ports=(1,)) -> the result of a shell script run in a Linux
                   guest (QEMU) logged in to those ports with the kernel initiator; .start() for longer plays
  msa500_guest_image  the guest image (built once, cached; see msa500_emu.testing.guest)

Marker
  @pytest.mark.msa500(config=TOML_OR_PATH, mode="inprocess")   per test or module, for `msa500`

On a failed test the end of each of its arrays' logs is added to the report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import containers as _containers
from . import guest as _guest
from .handle import MSA500
from .launch import MODES, ConfigSource, start_array

LOG_TAIL_LINES = 40
PLUGIN_MODES = (*MODES, _containers.MODE)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("msa500", "msa500-emu: emulated HP MSA500 arrays")
    group.addoption("--msa500-mode", choices=PLUGIN_MODES, default=None,
                    help="run the arrays of the msa500 fixtures as a child process (subprocess, the default), "
                         "on a thread of the test process (inprocess) or in the Docker image (container)")
    parser.addini("msa500_mode", "default mode of the msa500 fixtures: subprocess or inprocess",
                  default="subprocess")
    parser.addini("msa500_image", f"the image of --msa500-mode container (${_containers.IMAGE_ENV} beats it; "
                  f"default {_containers.DEFAULT_IMAGE})", default="")
    parser.addini("msa500_startup_timeout", "seconds an array may take to start (default 30)", default="30")
    parser.addini("msa500_shared_reset", "RESET msa500_shared (the state right after start) before each test "
                  "that uses it (the msa500_reset marker does it per test)", type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "msa500(config=None, mode=None): the shelf (TOML text or file) and mode of the `msa500` fixture's array",
    )
    config.addinivalue_line(
        "markers", "msa500_reset(on=True): RESET msa500_shared before this test (False: not, whatever the ini says)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"msa500-emu: arrays in {_mode(config)} mode"


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("--msa500-mode", default=None) or str(config.getini("msa500_mode") or "subprocess")
    if mode not in PLUGIN_MODES:
        raise pytest.UsageError(f"msa500_mode = {mode!r}: one of {', '.join(PLUGIN_MODES)}")
    return mode


def _startup_timeout(config: pytest.Config) -> float:
    try:
        return float(config.getini("msa500_startup_timeout"))
    except ValueError:
        raise pytest.UsageError("msa500_startup_timeout: a number of seconds") from None


def _image(config: pytest.Config) -> str | None:
    """The container mode's image: $MSA500_IMAGE beats the ini option (None: the default tag)."""
    return os.environ.get(_containers.IMAGE_ENV) or str(config.getini("msa500_image") or "") or None


class ArrayFactory:
    """Starts arrays under one directory and stops them all at teardown."""

    def __init__(self, base: Path, mode: str, startup_timeout: float = 30.0, image: str | None = None) -> None:
        self.base = base
        self.mode = mode
        self.startup_timeout = startup_timeout
        self.image = image  # the container mode's (None: $MSA500_IMAGE, else the default tag)
        self.arrays: list[MSA500] = []

    def __call__(self, config: ConfigSource = None, *, mode: str | None = None, name: str | None = None,
                 extra: list[str] | None = None) -> MSA500:
        """A new array: its state in <base>/<name>, its log in <base>/<name>.log."""
        name = name or f"msa500-{len(self.arrays) + 1}"
        if any(a.state_dir.name == name and a.alive for a in self.arrays):
            raise ValueError(f"an array named {name!r} is running already")
        if (mode or self.mode) == _containers.MODE:
            arr: MSA500 = _containers.start_container(self.base / name, config, image=self.image, extra=extra or (),
                                                      startup_timeout=self.startup_timeout)
        else:
            arr = start_array(self.base / name, config, extra, mode=mode or self.mode,
                              startup_timeout=self.startup_timeout)
        self.arrays.append(arr)
        return arr

    def many(self, n: int, config: ConfigSource = None, *, mode: str | None = None) -> list[MSA500]:
        """n arrays started in parallel (msa500_emu.testing.fleet), each with its own state and serial."""
        from .fleet import start_arrays

        base = next(self.base / f"fleet{k}" for k in range(1, 1000) if not (self.base / f"fleet{k}").exists())
        arrays = start_arrays(n, base, config, mode=mode or self.mode, startup_timeout=self.startup_timeout)
        self.arrays.extend(arrays)
        return arrays

    def stop_all(self) -> list[str]:
        """Stop every array still running; a line for each that did not stop cleanly."""
        problems = []
        for arr in reversed(self.arrays):
            was_alive = arr.alive
            rc = arr.stop()
            if was_alive and rc != 0:
                problems.append(f"{arr!r} exited with status {rc}; log {arr.log}:\n{arr.log_tail(LOG_TAIL_LINES)}")
        return problems


@pytest.fixture(scope="session")
def msa500_mode(pytestconfig: pytest.Config) -> str:
    """subprocess or inprocess: --msa500-mode, else the ini option msa500_mode."""
    return _mode(pytestconfig)


@pytest.fixture
def msa500_config() -> ConfigSource:
    """The shelf of the `msa500` fixture: override in a conftest or module (TOML text or a path)."""
    return None


@pytest.fixture
def msa500_factory(tmp_path: Path, msa500_mode: str, pytestconfig: pytest.Config) -> Iterator[ArrayFactory]:
    """msa500_factory(config=None, mode=None, name=None) -> a new array; all stopped after the test."""
    factory = ArrayFactory(tmp_path, msa500_mode, _startup_timeout(pytestconfig), _image(pytestconfig))
    yield factory
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def msa500(request: pytest.FixtureRequest, msa500_factory: ArrayFactory, msa500_config: ConfigSource) -> MSA500:
    """A fresh array for this test, on free loopback ports with its state in tmp_path/msa500."""
    config, mode = msa500_config, None
    marker = request.node.get_closest_marker("msa500")
    if marker is not None:
        config = marker.kwargs.get("config", marker.args[0] if marker.args else config)
        mode = marker.kwargs.get("mode")
    return msa500_factory(config, mode=mode, name="msa500")


@pytest.fixture(scope="session")
def msa500_shared_config() -> ConfigSource:
    """The shelf of `msa500_shared` (override it in a conftest, session scope)."""
    return None


@pytest.fixture(scope="session")
def msa500_shared(tmp_path_factory: pytest.TempPathFactory, msa500_mode: str, msa500_shared_config: ConfigSource,
                  pytestconfig: pytest.Config) -> Iterator[MSA500]:
    """One array for the whole session: tests must leave it as they found it (no faults, RSO off)."""
    factory = ArrayFactory(tmp_path_factory.mktemp("msa500-shared"), msa500_mode, _startup_timeout(pytestconfig),
                           _image(pytestconfig))
    yield factory(msa500_shared_config, name="shared")
    problems = factory.stop_all()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _msa500_shared_reset(request: pytest.FixtureRequest) -> None:
    """RESET the shared array before a test that uses it, when ini msa500_shared_reset or the marker asks."""
    if "msa500_shared" not in request.fixturenames:
        return
    marker = request.node.get_closest_marker("msa500_reset")
    wanted = bool(request.config.getini("msa500_shared_reset")) if marker is None else bool(
        marker.kwargs.get("on", marker.args[0] if marker.args else True))
    if wanted:
        request.getfixturevalue("msa500_shared").reset()


@pytest.fixture(scope="session")
def msa500_guest_image() -> _guest.ClusterImage:
    """The cluster guest image, built (or found in its cache) once per session; skips without root."""
    why = _guest.guest_unavailable()
    if why:
        pytest.skip(why)
    return _guest.build()


@pytest.fixture
def msa500_guest(msa500_guest_image: _guest.ClusterImage, tmp_path: Path) -> Iterator[_guest.GuestFactory]:
    """msa500_guest(array, script, ports=(1,), initiator=None, multipath=False) -> GuestResult."""
    factory = _guest.GuestFactory(msa500_guest_image, tmp_path / "guests")
    yield factory
    factory.kill_all()


def _arrays_of(item: pytest.Item) -> list[MSA500]:
    found: list[MSA500] = []
    for value in getattr(item, "funcargs", {}).values():
        candidates: list[Any] = value.arrays if isinstance(value, ArrayFactory) else [value]
        for arr in candidates:
            if isinstance(arr, MSA500) and all(arr is not f for f in found):
                found.append(arr)
    return found


def _guests_of(item: pytest.Item) -> list[_guest.Guest]:
    return [g for v in getattr(item, "funcargs", {}).values() if isinstance(v, _guest.GuestFactory) for g in v.guests]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for g in _guests_of(item):
            report.sections.append((f"guest console ({g.console_log})", g.tail(LOG_TAIL_LINES)))
        for arr in _arrays_of(item):
            tail = arr.log_tail(LOG_TAIL_LINES)
            if tail:
                report.sections.append((f"msa500 log ({arr.log})", tail))
