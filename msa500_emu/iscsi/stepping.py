"""Long commands of a connection run in steps (firmware_model/scsi/stepped.py), sans-I/O.

A command whose answer is `Stepped` (a WRITE SAME of many megabytes, a SYNCHRONIZE CACHE or FUA
write that destages and syncs the drives) is kept as the connection's `stepping` command; the
shell calls `step()` again at the next turn of its loop, or when what the step waits for (an
fdatasync on a drive-I/O thread) is done, so every other connection is served in between. While
it runs, this connection takes no further command off the CmdSN order (they wait in `held`, and
the CmdSN window bounds them): the session sees its commands executed exactly in order, as when
they ran at once. Task management works as for any task: ABORT TASK, an aborting reset, a lost
connection end it where it is. `Connection` is a Stepping: these are its own methods.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware_model.scsi.stepped import Stepped
from firmware_model.scsi.types import DataDirection, ScsiRequest, ScsiResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from .node import TargetNode


@dataclass
class Running:
    """The connection's command that runs in steps."""

    itt: int
    lun: int
    req: ScsiRequest
    stepped: Stepped
    edtl: int
    direction: DataDirection
    started: int


class Stepping:
    """Mixin of Connection: the command in steps, and stepping it."""

    node: TargetNode
    closed: bool
    can_step = False  # set by a shell that calls step() when asked through step_soon
    step_soon: Callable[[], None]

    def __init__(self) -> None:
        super().__init__()
        self.stepping: Running | None = None
        self.step_soon = lambda: None

    def _start_stepping(self, run: Running) -> None:
        self.stepping = run
        self.step_soon()

    def step(self) -> Future[None] | bool:
        """One step of the stepping command: True to be called again at the next turn, a Future
        to be called again once it is done, False when nothing is left to step."""
        run = self.stepping
        if self.closed:
            self.stepping = None
            return False
        if run is None:  # ended by task management: the commands behind it go on
            self._drain_held()
            return self.stepping is not None
        out = self.node.scsi.resume(run.req, run.stepped)
        if out is None:
            return True
        if isinstance(out, Future):
            return out
        self.stepping = None
        wanted = run.req.spdtl if run.direction == DataDirection.WRITE else None
        self._answer(run.itt, run.lun, out, run.edtl, run.direction, wanted, run.started)
        self._drain_held()  # the commands that waited behind it, in CmdSN order
        return self.stepping is not None  # one of them may step in its turn

    def _stop_stepping(self, itt: int | None = None, lun: int | None = None) -> bool:
        """End the stepping command where it is (aborted: no answer); False when it does not match."""
        run = self.stepping
        if run is None or (itt is not None and run.itt != itt) or (lun is not None and run.lun != lun):
            return False
        self.stepping = None
        assert run.stepped.work is not None
        run.stepped.work.close()
        self.step_soon()  # the shell then lets the held commands go on
        return True

    # provided by Connection
    def _answer(self, itt: int, lun: int, result: ScsiResult, edtl: int, direction: DataDirection,
                wanted: int | None, started: int) -> None:
        raise NotImplementedError

    def _drain_held(self) -> None:
        raise NotImplementedError

