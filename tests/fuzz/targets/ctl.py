"""The management command parser: `run` (the console and HTTP command language) against the
process's Emulator wired to a small in-process Controller on a virtual clock. CommandError is the
answer to a bad line; anything else is a crash. The shelf is rebuilt every RESET_EVERY inputs so
deletes and faults do not leave the rest of the run on a dead shelf."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from msa500_emu.config import load
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.management.commands import CommandError, run
from tests.unit.shelf_helpers import Clocked

from ._errors import capture

MAX_LEN = 4096  # the longest input libFuzzer tries (scripts/fuzz -max_len)

RESET_EVERY = 200
_LOG = capture("msa500_emu")
_STATE: dict[str, Any] = {"n": 0}


def _fresh() -> Any:
    from msa500_emu.server import Emulator

    old = _STATE.get("emulator")
    if old is not None and old.shelf is not None and not old.shelf.closed:
        old.shelf.close()
    if "dir" in _STATE:
        shutil.rmtree(_STATE["dir"], True)
    where = Path(tempfile.mkdtemp(prefix="msa500-fuzz-ctl-"))
    em = Emulator(load(None, {"state_dir": str(where / "state")}))
    em.shelf = shelf = Clocked().open(where / "shelf")
    cfg = NodeConfig(target_name=shelf.identity.target_name)  # what Emulator.start wires, without the portals
    em.node = TargetNode(cfg, shelf.target, [PortalInfo(1, "127.0.0.1", 3260), PortalInfo(2, "127.0.0.1", 3261)])
    em.node.access = shelf.access
    _STATE.update(emulator=em, dir=where)
    return em


def _cleanup() -> None:
    em = _STATE.get("emulator")
    if em is not None and em.shelf is not None and not em.shelf.closed:
        em.shelf.close()
    if "dir" in _STATE:
        shutil.rmtree(_STATE["dir"], True)


atexit.register(_cleanup)
_LOOP = asyncio.new_event_loop()  # POWER OFF with a duration sets a timer on the running loop


async def _run(em: Any, line: str) -> None:
    try:
        run(em, line)
    except CommandError:
        pass


def TestOneInput(data: bytes) -> None:
    line = data.decode("utf-8", "replace")[:4096]
    if _STATE["n"] % RESET_EVERY == 0:
        _fresh()
    _STATE["n"] += 1
    _LOOP.run_until_complete(_run(_STATE["emulator"], line))
