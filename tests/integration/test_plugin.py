"""The pytest plugin as a user gets it: `pip install msa500-emu`, then pytest in their own project.

Each test runs pytest in a child process, in a directory that holds nothing of this repository, so
the fixtures come only through the package's pytest11 entry point.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "test_failover_example.py"


def run_pytest(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """pytest in `project`, with only the msa500 plugin from this environment's entry points."""
    if not (project / "pytest.ini").exists():
        (project / "pytest.ini").write_text("[pytest]\n")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:hypothesispytest",
           f"--basetemp={project / 'tmp'}", *args]
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("mode", ["subprocess", "inprocess"])
def test_the_example_passes_in_a_users_project(tmp_path: Path, mode: str) -> None:
    project = tmp_path / "user-ci"
    project.mkdir()
    shutil.copy(EXAMPLE, project / EXAMPLE.name)
    out = run_pytest(project, "-q", f"--msa500-mode={mode}", EXAMPLE.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 passed" in out.stdout


CONFTEST = '''
import pytest

@pytest.fixture
def msa500_config():
    return """
[shelf]
serial = "FROMCONF01"
drive_size = "128MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2, 3]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "5"
size = "32MiB"
"""
'''

WIRING = '''
import pytest
from msa500_emu.testing import InProcessArray, MSA500, RunningArray

OTHER = """
[shelf]
serial = "FROMMARK01"
drive_size = "128MiB"
[[shelf.arrays]]
name = "A"
bays = [1, 2]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
"""
seen = []


def test_config_comes_from_the_overridden_fixture(msa500):
    assert msa500.describe()["serial"] == "FROMCONF01"
    assert isinstance(msa500, InProcessArray)  # pytest.ini: msa500_mode = inprocess


@pytest.mark.msa500(config=OTHER)
def test_the_marker_wins(msa500):
    assert msa500.describe()["serial"] == "FROMMARK01"


@pytest.mark.msa500(mode="subprocess")
def test_the_marker_picks_the_mode(msa500):
    assert isinstance(msa500, RunningArray) and msa500.proc.poll() is None


def test_the_factory_starts_several(msa500_factory):
    a, b = msa500_factory(), msa500_factory(OTHER)
    assert a.describe()["serial"] == "E03KMN5W2T" and b.describe()["serial"] == "FROMMARK01"


@pytest.mark.parametrize("n", [1, 2])
def test_the_shared_array_is_one_for_the_session(msa500_shared, n):
    seen.append(msa500_shared)
    assert all(s is msa500_shared for s in seen) and msa500_shared.alive


def test_a_failure_shows_the_array_log(msa500):
    msa500.fail_drive(3)
    assert False, "deliberate"
'''


def test_fixtures_marker_options_and_failure_report(tmp_path: Path) -> None:
    project = tmp_path / "wiring"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\nmsa500_mode = inprocess\n")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_wiring.py").write_text(WIRING)
    out = run_pytest(project, "-q")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "1 failed, 6 passed" in text, text
    assert "msa500: arrays in inprocess mode" not in text  # -q hides the header
    failure = text[text.index("test_a_failure_shows_the_array_log"):]
    assert "msa500 log (" in failure and "DRIVE_FAILED" in failure  # the log tail in the report

    # The command line overrides the ini option.
    sub = run_pytest(project, "--msa500-mode=subprocess", "-k", "test_config_comes")
    assert sub.returncode == 1 and "msa500-emu: arrays in subprocess mode" in sub.stdout, sub.stdout
    assert "isinstance(msa500, InProcessArray)" in sub.stdout
