"""The Recovery Server Option wired into the controller: its events into the log, its port
states onto every logical drive (the ALUA gate), its settings into NVRAM, and its operations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..events import EventCode
from ..rso import RsoError
from .errors import ControllerError

if TYPE_CHECKING:
    from .core import Controller


class RsoLink:
    def __init__(self, c: Controller) -> None:
        self.c = c

    def event(self, code: EventCode, message: str) -> None:
        c = self.c
        c.log.emit(code, message)

    def changed(self, persistent: bool) -> None:
        """Apply the model's port states to every logical drive at once; keep settings in NVRAM."""
        c = self.c
        c.target.set_port_states(c.rso.port_states())
        if persistent:
            c.nvram.save()

    def nexus(self, nexus: Any, seen: bool) -> None:
        c = self.c
        if seen:
            c.rso.nexus_seen(nexus)
        else:
            c.rso.nexus_loss(nexus)

    def configure(self, enabled: bool, timeout_s: float | None = None,
                  act_alone: bool | None = None) -> dict[str, Any]:
        """Configure RSO as the primary does (the recovery joins with its first acknowledgment)."""
        c = self.c
        try:
            c.rso.configure(enabled, timeout_s, act_alone)
        except (RsoError, ValueError) as exc:
            raise ControllerError(str(exc)) from None
        return c.rso.status()

    def status(self) -> dict[str, Any]:
        c = self.c
        return c.rso.status()

    def failover(self) -> dict[str, Any]:
        """Forced failover (the F8 key) from the management side."""
        c = self.c
        try:
            c.rso.failover(None)
        except RsoError as exc:
            raise ControllerError(str(exc)) from None
        return c.rso.status()

    def restore(self) -> dict[str, Any]:
        """Manual restore: refused while the recovery host is logged in on port 2."""
        c = self.c
        try:
            c.rso.restore()
        except RsoError as exc:
            raise ControllerError(str(exc)) from None
        return c.rso.status()
