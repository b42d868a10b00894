"""Scenario files: repeatable storage drills as a TOML timeline (docs/scenarios.md).

    from msa500_emu.scenario import load, run_virtual
    result = run_virtual("examples/scenarios/primary-fails.toml")
    print(result.text())

`run_on(handle, path)` runs one against a running array (the pytest plugin's `msa500.run_scenario`),
`msa500-emu scenario run FILE` from the command line.
"""

from .format import FORMAT_VERSION, Scenario, ScenarioError, Step, UnitExpect, load, loads, parse_duration
from .runner import Result, Row, run, run_on, run_virtual

__all__ = ["FORMAT_VERSION", "Result", "Row", "Scenario", "ScenarioError", "Step", "UnitExpect", "load", "loads",
           "parse_duration", "run", "run_on", "run_virtual"]
