"""Test support for code that uses an MSA500: start an emulated array per test, inject faults, drive RSO.

With pytest, the fixtures come from the plugin this package registers (`msa500`, `msa500_factory`,
`msa500_config`, `msa500_shared`; see docs/testing.md). Without pytest, `start_array()` gives the
same handle:

    from msa500_emu.testing import start_array
    with start_array("/tmp/shelf", mode="inprocess") as arr:
        ini = arr.initiator(port=1)
        ini.write(1, 0, b"x" * 512)
        arr.fail_drive(1)
"""

from ..iscsi.initiator import CommandResult, Initiator, InitiatorConfig, InitiatorError
from .errors import CtlError, MSA500Error, ScsiError, StartError, WaitTimeout
from .fleet import start_arrays, stop_arrays
from .handle import MSA500
from .launch import MODES, PACKAGE_ROOT, ConfigSource, InProcessArray, RunningArray, mirror_shelf, start_array
from .rso import RSO_STATES, Heartbeat, RsoBlock, vendor_cdb
from .sessions import report_luns

Array = MSA500

__all__ = [
    "MODES",
    "MSA500",
    "PACKAGE_ROOT",
    "RSO_STATES",
    "Array",
    "CommandResult",
    "ConfigSource",
    "CtlError",
    "Heartbeat",
    "InProcessArray",
    "Initiator",
    "InitiatorConfig",
    "InitiatorError",
    "MSA500Error",
    "RsoBlock",
    "RunningArray",
    "ScsiError",
    "StartError",
    "WaitTimeout",
    "mirror_shelf",
    "report_luns",
    "start_array",
    "start_arrays",
    "stop_arrays",
    "vendor_cdb",
]
