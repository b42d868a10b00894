"""RSO for tests: the vendor commands' names and answers (from `firmware_model.rso_wire`) and a
background heartbeat that plays a live primary."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from firmware_model.rso_wire import STATES, RsoOpcode, StatusBlock
from firmware_model.rso_wire import cdb as vendor_cdb

if TYPE_CHECKING:
    from .handle import MSA500

# RSO vendor commands on LUN 0 (docs/rso-commands.md), under the names this package gave them.
HEARTBEAT = RsoOpcode.HEARTBEAT
ACKNOWLEDGE = RsoOpcode.ACKNOWLEDGE
RSO_STATUS = RsoOpcode.STATUS
FORCE_FAILOVER = RsoOpcode.FORCE_FAILOVER
CONFIGURE = RsoOpcode.CONFIGURE
RSO_STATES = STATES
RsoBlock = StatusBlock  # the answer of HEARTBEAT and ACKNOWLEDGE; `RsoBlock.parse(data)`


class Heartbeat:
    """A background thread sending HEARTBEAT (and optionally ACKNOWLEDGE) until stopped."""

    def __init__(self, array: MSA500, interval: float, acknowledge: bool) -> None:
        self.array = array
        self.interval = interval
        self.acknowledge = acknowledge
        self.count = 0
        self.errors: list[BaseException] = []
        self.last: RsoBlock | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="msa500-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.array.heartbeat()
                if self.acknowledge:
                    self.array.acknowledge()
                self.count += 1
            except Exception as exc:  # reported through .errors; the test decides
                self.errors.append(exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


__all__ = ["ACKNOWLEDGE", "CONFIGURE", "FORCE_FAILOVER", "HEARTBEAT", "RSO_STATES", "RSO_STATUS", "Heartbeat",
           "RsoBlock", "vendor_cdb"]
