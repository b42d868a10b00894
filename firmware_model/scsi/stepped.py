"""Long commands run in steps, with other sessions' commands in between.

A handler whose work is long (a WRITE SAME over many megabytes, a SYNCHRONIZE CACHE that
destages and syncs the drives) returns a `Stepped` answer when the transport said it can run one
(`ScsiRequest.may_step`). The transport then calls `ScsiTarget.resume` until it gives the final
result: between two calls the event loop serves everything else, and the command's own session
takes no new command (its order stays exactly as if the command ran at once). Each step is
admitted again as a new command would be: a reservation or an RSO/ALUA fence that arrived
meanwhile ends the command there (what it wrote before stays, as for any command interrupted by a
fence), so nothing is written for a fenced host after its fence. A caller that cannot step (no
`may_step`) gets the whole command run at once, as before.
"""

from __future__ import annotations

from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass

from .types import ScsiResult

#: what a step yields: None (call again at the next turn) or a Future (call again once it is done)
Wait = Future[None] | None
Work = Generator[Wait, None, ScsiResult]


@dataclass
class Stepped(ScsiResult):
    """The answer of a command still running: `work` yields between steps and returns its result."""

    work: Work | None = None
    unit: object = None  # the logical unit it runs on (set by the target)


def run_to_end(work: Work) -> ScsiResult:
    """Every step at once, waiting for what a step waits on (for callers that cannot step)."""
    while True:
        try:
            wait = next(work)
        except StopIteration as done:
            return done.value
        if wait is not None:
            wait.result()
