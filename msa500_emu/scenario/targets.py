"""What a scenario runs against: a running array through its API (wall clock), or an in-process
controller on the virtual clock, behind one small interface so the runner cannot tell them apart.

Both run the same command language (`management.commands.run` on the server, or here on an
in-process `Array`) and play the same two RSO hosts with the same vendor commands: the primary
heartbeats from port 1, the recovery acknowledges from port 2 and, once the answer says
take-over, sends FORCE FAILOVER as its pre-boot monitor does.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from firmware_model.clock import VirtualClock
from firmware_model.controller import Controller, ControllerError, ShelfError
from firmware_model.rso_wire import RsoOpcode, StatusBlock
from firmware_model.rso_wire import cdb as vendor_cdb
from firmware_model.scsi.types import Nexus, ScsiRequest, Status

from ..config import ConfigError, load
from ..management import commands
from ..management.grammar import CommandError
from ..server import Emulator
from .format import ScenarioError

WALL_POLL_S = 0.1  # how often a wall-clock wait asks the API again
VIRTUAL_START = 100.0
WALL_EPOCH = 1_800_000_000.0  # the virtual shelf's calendar (event times), as the unit tests use
INITIATOR = "iqn.2026-12.scenario"
UNIT_ATTENTION = 0x6


class HostError(Exception):
    """A host's RSO command did not get through (shelf off, port fenced, session lost): one line."""


class Target(Protocol):
    virtual: bool

    def now(self) -> float:
        """Seconds since the scenario started."""
        ...

    def command(self, line: str) -> str:
        """Run one command of the language; its text, or CommandError with the array's one line."""
        ...

    def units(self) -> list[dict[str, Any]]: ...

    def rso(self) -> dict[str, Any]: ...

    def events(self, since_id: int = 0) -> list[dict[str, Any]]: ...

    def host(self, role: str) -> str | None:
        """One turn of a host's RSO agent; a note when it did more than its usual command."""
        ...

    def wait(self, until: float) -> None:
        """Let time pass towards `until` (it may return earlier: something may have happened)."""
        ...

    def close(self) -> None: ...


def _take_over(block: StatusBlock) -> bool:
    return block.take_over and not block.failed_over


# ------------------------------------------------------------------------------ virtual clock
class VirtualEmulator(Emulator):
    """The emulator process without its sockets: the registry's process rows on a virtual clock.

    Shelf power has no portals to drop and its timed power-on is a virtual deadline; port and
    session faults need real iSCSI ports and answer so (Emulator's own one-line refusal).
    """

    power_on_at: float | None = None

    def power_off(self, duration: float | None = None) -> dict[str, Any]:
        ctl = self._ctl()
        try:
            result = ctl.power_off()
        except ControllerError as exc:
            raise CommandError(str(exc)) from exc
        self.power_on_at = ctl.clock.now() + duration if duration else None
        return {**result, "duration_s": duration}

    def power_on(self) -> dict[str, Any]:
        self.power_on_at = None
        try:
            return self._ctl().power_on()
        except ControllerError as exc:
            raise CommandError(str(exc)) from exc

    def _path_faults(self) -> Any:
        raise CommandError("port and session faults need the iSCSI ports of a served array "
                           "(run the scenario without --virtual-clock)")

    def describe(self) -> dict[str, Any]:
        g: dict[str, Any] = dict(self._ctl().describe())
        g.update(uptime_s=0.0, powered_off_at=self.powered_off_at(), portals=[], sessions=[])
        return g


class VirtualTarget:
    """A shelf built in-process on a temporary state directory, on a VirtualClock."""

    virtual = True

    def __init__(self, shelf_config: Path | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="msa500-scenario-"))
        try:
            settings = load(shelf_config, {"state_dir": str(self.dir / "state")})
        except ConfigError as exc:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise ScenarioError(f"shelf {shelf_config}: {exc}") from None
        self.clock = VirtualClock(VIRTUAL_START)
        self.emulator = VirtualEmulator(settings)
        try:
            self.ctl = Controller(settings.state_dir, settings.shelf, self.clock,
                                  wall=lambda: WALL_EPOCH + self.clock.now())
        except (ShelfError, ControllerError, OSError) as exc:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise ScenarioError(f"shelf {shelf_config or '(built-in)'}: cannot build it: {exc}") from None
        self.emulator.shelf = self.ctl
        self.nexus = {"primary": Nexus(f"{INITIATOR}:primary,i,0x000001", 1),
                      "recovery": Nexus(f"{INITIATOR}:recovery,i,0x000002", 2)}

    def now(self) -> float:
        return self.clock.now() - VIRTUAL_START

    def command(self, line: str) -> str:
        return commands.run(self.emulator, line).text

    def units(self) -> list[dict[str, Any]]:
        return [dict(u) for u in self.emulator.units()]

    def rso(self) -> dict[str, Any]:
        return dict(self.ctl.rso_status())

    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        return [dict(e) for e in self.ctl.events(since_id)]

    def _vendor(self, role: str, opcode: int, length: int) -> StatusBlock | None:
        if not self.ctl.powered:
            raise HostError("the shelf is powered off")
        req = ScsiRequest(self.nexus[role], 0, vendor_cdb(opcode, length), b"", length)
        for _ in range(8):  # a new nexus, a power-on, a failover: unit attentions first
            res = self.ctl.target.execute(req)
            if res.status == Status.CHECK_CONDITION and res.sense and (res.sense[2] & 0xF) == UNIT_ATTENTION:
                continue
            if res.status != Status.GOOD:
                raise HostError(f"{RsoOpcode(opcode).name} from port {req.nexus.port} refused "
                                f"(status {int(res.status):#04x})")
            return StatusBlock.from_bytes(bytes(res.data)) if length else None
        raise HostError("unit attentions never stopped")

    def host(self, role: str) -> str | None:
        if role == "primary":
            self._vendor(role, RsoOpcode.HEARTBEAT, StatusBlock.LENGTH)
            return None
        block = self._vendor(role, RsoOpcode.ACKNOWLEDGE, StatusBlock.LENGTH)
        if block is not None and _take_over(block):
            self._vendor(role, RsoOpcode.FORCE_FAILOVER, 0)
            return "recovery: no heartbeat, FORCE FAILOVER sent"
        return None

    def wait(self, until: float) -> None:
        goal = until + VIRTUAL_START
        due = [d for d in (self.ctl.next_deadline(), self.emulator.power_on_at) if d is not None]
        step_to = min([goal, *due])
        if step_to > self.clock.now():
            self.clock.advance(step_to - self.clock.now())
        now = self.clock.now()
        if self.emulator.power_on_at is not None and self.emulator.power_on_at <= now:
            self.emulator.power_on()
        self.ctl.advance(now)

    def close(self) -> None:
        try:
            if not self.ctl.closed:
                self.ctl.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------ wall clock
class ApiTarget:
    """A running array: commands through its HTTP API, the hosts' RSO commands through its portals.

    `array` is the pytest plugin's handle (msa500_emu.testing.MSA500), or one attached to an array
    started elsewhere (`attach`): its API client and its role sessions are the ones tests use.
    """

    virtual = False

    def __init__(self, array: Any) -> None:
        self.array = array
        self.started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.started

    def command(self, line: str) -> str:
        from ..testing.errors import CtlError, MSA500Error

        try:
            return str(self.array.ctl(line, json=False))
        except CtlError as exc:
            raise CommandError(exc.error) from None
        except MSA500Error as exc:
            raise CommandError(str(exc)) from None

    def _get(self, what: str) -> Any:
        from ..testing.errors import CtlError, MSA500Error

        try:
            return self.array.ctl(what)
        except CtlError as exc:
            raise ScenarioError(f"{what}: {exc.error}") from None
        except MSA500Error as exc:
            raise ScenarioError(str(exc)) from None

    def units(self) -> list[dict[str, Any]]:
        return list(self._get("SHOW UNITS"))

    def rso(self) -> dict[str, Any]:
        return dict(self._get("RSO STATUS"))

    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._get("SHOW EVENTS") if int(e.get("id", 0)) > since_id]

    def host(self, role: str) -> str | None:
        try:
            if role == "primary":
                self.array.heartbeat()
                return None
            block = self.array.acknowledge()
            if _take_over(block):
                self.array.force_failover()
                return "recovery: no heartbeat, FORCE FAILOVER sent"
            return None
        except Exception as exc:  # a host that cannot reach the array is a timeline note
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HostError(text) from None

    def wait(self, until: float) -> None:
        left = until - self.now()
        if left > 0:
            time.sleep(min(left, WALL_POLL_S))

    def close(self) -> None:
        self.array.close_sessions()


def attach(api: str, token: str | None, timeout: float = 10.0) -> Any:
    """A handle on an array started elsewhere (`msa500-emu serve`), found by its API URL."""
    from ..testing.errors import MSA500Error
    from ..testing.handle import MSA500

    array = MSA500(Path("."), None, Path("msa500.log"))
    array.api = api.rstrip("/")
    array.token = token
    try:
        g = array.describe()
    except MSA500Error as exc:
        raise ScenarioError(str(exc)) from None
    except Exception as exc:  # CtlError: a wrong token, a refusal
        raise ScenarioError(f"{api}: {exc}") from None
    ports = {int(p["port"]): int(str(p["address"]).rsplit(":", 1)[1]) for p in g.get("portals", [])}
    array.port1, array.port2 = ports.get(1, 0), ports.get(2, 0)
    array.target = str(g.get("target_name") or g.get("identity", {}).get("target_name", ""))
    return array


__all__ = ["ApiTarget", "HostError", "Target", "VirtualEmulator", "VirtualTarget", "attach"]
