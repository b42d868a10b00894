"""The reference-model checker in CI: random fault sequences on every RAID level.

Profiles (MODEL_PROFILE): "ci" (default) explores `max_examples` sequences of up to
`stateful_step_count` steps per level; "smoke" a handful; "nightly" many more (scripts/check-model
runs the same machines bounded by time instead). A failure prints the shrunk sequence of rules
and a reproduction blob (print_blob).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from .machine import MACHINES

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("model-smoke", max_examples=5, stateful_step_count=20, **_COMMON)
# CI runs the same sequences every time (a red run is a regression, reproducible); exploring new
# ones is scripts/check-model's job
settings.register_profile("model-ci", max_examples=int(os.environ.get("MODEL_EXAMPLES", "200")),
                          stateful_step_count=int(os.environ.get("MODEL_STEPS", "30")), derandomize=True,
                          **_COMMON)
settings.register_profile("model-nightly", max_examples=2000, stateful_step_count=60, **_COMMON)
PROFILE = settings.get_profile("model-" + os.environ.get("MODEL_PROFILE", "ci"))


@pytest.mark.slow
@pytest.mark.parametrize("level", list(MACHINES))
def test_data_path_matches_the_reference_model(level: str) -> None:
    """Every read answers the last acknowledged data or an error where redundancy was exceeded."""
    run_state_machine_as_test(MACHINES[level], settings=PROFILE)


@pytest.mark.slow
def test_the_nightly_script_runs_and_reports() -> None:
    """scripts/check-model, as the README shows it, bounded to a few sequences here."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "check-model"
    out = subprocess.run([sys.executable, str(script), "--minutes", "1", "--level", "5", "--max-sequences", "10"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "RAID   5:" in out.stdout and "sequences" in out.stdout
