"""A running emulated MSA500 for a test: start it, reach it, break it, drive RSO, stop it.

The names this module has always offered, gathered from where they live now:
- `launch`: `start_array()`, the child-process (`RunningArray`) and in-process (`InProcessArray`)
  arrays, `mirror_shelf()`, `MODES`, `ConfigSource`, `PACKAGE_ROOT`;
- `handle`: `MSA500`, the handle both give (portal URLs, the `ctl` command language over the
  HTTP API, fault injection, the RSO vendor commands from the right port, waits with timeouts);
- `sessions`: iSCSI logins and `report_luns()`; `rso`: the vendor commands' names, `RsoBlock`,
  `vendor_cdb()`, `Heartbeat`; `errors`: `MSA500Error` and its subclasses.
Nothing here depends on pytest; the fixtures are in `msa500_emu.testing.plugin`.
"""

from __future__ import annotations

from .errors import CtlError, MSA500Error, ScsiError, StartError, WaitTimeout
from .handle import MSA500
from .launch import (
    MODES,
    PACKAGE_ROOT,
    ConfigSource,
    InProcessArray,
    RunningArray,
    _config_path,
    mirror_shelf,
    start_array,
)
from .rso import (
    ACKNOWLEDGE,
    CONFIGURE,
    FORCE_FAILOVER,
    HEARTBEAT,
    RSO_STATES,
    RSO_STATUS,
    Heartbeat,
    RsoBlock,
    vendor_cdb,
)
from .sessions import INITIATOR_PREFIX, LOOPBACK, report_luns

__all__ = [
    "ACKNOWLEDGE",
    "CONFIGURE",
    "FORCE_FAILOVER",
    "HEARTBEAT",
    "INITIATOR_PREFIX",
    "LOOPBACK",
    "MODES",
    "MSA500",
    "PACKAGE_ROOT",
    "RSO_STATES",
    "RSO_STATUS",
    "ConfigSource",
    "CtlError",
    "Heartbeat",
    "InProcessArray",
    "MSA500Error",
    "RsoBlock",
    "RunningArray",
    "ScsiError",
    "StartError",
    "WaitTimeout",
    "_config_path",
    "mirror_shelf",
    "report_luns",
    "start_array",
    "vendor_cdb",
]
