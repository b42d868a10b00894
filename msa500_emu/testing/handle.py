"""The handle of a running emulated MSA500: where it listens, the `ctl` language over the HTTP
API, fault injection, RSO from the management side and through the vendor commands from the
right port, waits with timeouts, iSCSI sessions. How it is started is the subclasses' business
(`msa500_emu.testing.launch`).
"""

from __future__ import annotations

import itertools
import json as _json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from firmware_model.rso_wire import ConfigureParams

from ..iscsi.initiator import CommandResult, Initiator, InitiatorConfig
from ..management import render, watch
from ..management.grammar import CommandError
from .errors import CtlError, MSA500Error, ScsiError, StartError, WaitTimeout
from .rso import ACKNOWLEDGE, CONFIGURE, FORCE_FAILOVER, HEARTBEAT, Heartbeat, RsoBlock, vendor_cdb
from .sessions import INITIATOR_PREFIX, LOOPBACK, RoleSession, login

T = TypeVar("T")


class MSA500:
    """A running emulated array. Start one with `start_array()` or the `msa500` fixtures."""

    mode: str = "?"

    def __init__(self, state_dir: Path, config: Path | None, log: Path, *, startup_timeout: float = 30.0) -> None:
        self.state_dir = state_dir
        self.config = config
        self.log = log
        self.startup_timeout = startup_timeout
        self.target = ""
        self.port1 = 0
        self.port2 = 0
        self.api = ""  # base URL of the management API, e.g. http://127.0.0.1:8500
        self.token: str | None = None  # the API's bearer token (None: the array runs with --no-api-auth)
        self.token_file: Path | None = None  # where the array keeps it (the serve banner says)
        self._roles: dict[str, RoleSession] = {}
        self._roles_lock = threading.Lock()  # a background Heartbeat creates role sessions too
        self._initiators: list[Initiator] = []
        self._names = itertools.count(1)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.mode} {self.target} port1={self.portal(1)} "
                f"port2={self.portal(2)} api={self.api}>")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where it listens ------------------------------------------------------------
    def tcp_port(self, port: int) -> int:
        if port not in (1, 2):
            raise ValueError(f"controller port {port}: the MSA500 has ports 1 and 2")
        return self.port1 if port == 1 else self.port2

    def portal(self, port: int = 1) -> str:
        """HOST:PORT of a controller port's iSCSI portal."""
        return f"{LOOPBACK}:{self.tcp_port(port)}"

    def url(self, port: int = 1, lun: int = 1) -> str:
        """libiscsi/QEMU URL of a LUN through a controller port."""
        return f"iscsi://{self.portal(port)}/{self.target}/{lun}"

    @property
    def portals(self) -> dict[int, str]:
        return {1: self.portal(1), 2: self.portal(2)}

    @property
    def api_port(self) -> int:
        return int(self.api.rsplit(":", 1)[1]) if self.api else 0

    # -- lifecycle (the subclasses start and stop the emulator itself) ---------------
    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        raise NotImplementedError

    def _stop(self) -> int:
        raise NotImplementedError

    def stop(self) -> int:
        """Stop cleanly (sessions closed, drive images flushed); the exit status, 0 when clean."""
        self.close_sessions()
        return self._stop()

    def restart(self, *, same_ports: bool = True) -> Self:
        """Stop and start again on the same state (and, if they are still free, the same ports)."""
        self.stop()
        if same_ports and self.port1:
            try:
                self._start(self.port1, self.port2, self.api_port, True)
                return self
            except StartError:
                pass
        self._start(0, 0, 0, True)
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- management API ----------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <token>` for a request of your own to the API ({} without auth)."""
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def _http(self, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        data = None if body is None else _json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json", **self.auth_headers()})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return _json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                return _json.loads(exc.read())
            except ValueError:
                raise MSA500Error(f"{self.api}{path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MSA500Error(f"cannot reach the array's API at {self.api}: {getattr(exc, 'reason', exc)}") from None

    def get(self, path: str) -> Any:
        """GET an API path (e.g. /api/health) and decode the JSON."""
        return self._http(path)

    def health(self) -> dict[str, Any]:
        return dict(self.get("/api/health"))

    def ctl(self, *words: str, json: bool = True) -> Any:
        """Run a `msa500-emu ctl` command: ctl("SHOW", "UNITS") or ctl("FAULT DISK4 FAIL").

        Returns the JSON result (json=True) or the text rendering; raises CtlError on `ok: false`.
        """
        line = " ".join(words)
        body = self._http("/api/command", {"command": line})
        if not isinstance(body, dict) or not body.get("ok"):
            error = body.get("error", "command failed") if isinstance(body, dict) else repr(body)
            raise CtlError(line, str(error))
        return body.get("result") if json else body.get("text", "")

    def show(self, what: str) -> Any:
        return self.ctl("SHOW", what)

    def describe(self) -> dict[str, Any]:
        """SHOW GLOBALS."""
        return dict(self.ctl("SHOW", "GLOBALS"))

    def disks(self) -> list[dict[str, Any]]:
        return list(self.ctl("SHOW", "DISKS"))

    def units(self) -> list[dict[str, Any]]:
        return list(self.ctl("SHOW", "UNITS"))

    def disk(self, bay: int) -> dict[str, Any]:
        for d in self.disks():
            if d.get("bay") == bay:
                return d
        raise MSA500Error(f"no bay {bay}")

    def unit(self, lun: int) -> dict[str, Any]:
        for u in self.units():
            if u.get("lun") == lun:
                return u
        raise MSA500Error(f"no unit with LUN {lun}")

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Events with id > since, oldest first (each has id, code, severity, message, ...)."""
        return [e for e in self.ctl("SHOW", "EVENTS") if int(e.get("id", 0)) > since]

    def last_event_id(self) -> int:
        events = self.ctl("SHOW", "EVENTS")
        return int(events[-1]["id"]) if events else 0

    def wait_for_event(self, code: str, since: int = 0, timeout: float = 10.0) -> dict[str, Any]:
        """The first event with this code after `since` (an id from last_event_id())."""
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events(since) if e.get("code") == code), None)

        return self.wait_for(find, timeout, message=f"event {code}")

    # -- fault injection (the FAULT words of the ctl language) ------------------------
    def fault(self, *words: str) -> Any:
        """FAULT <words>, e.g. fault("DISK4", "FAIL"), fault("PSU1 FAIL")."""
        return self.ctl("FAULT", *words)

    def fail_drive(self, bay: int) -> Any:
        return self.fault(f"DISK{bay}", "FAIL")

    def pull_drive(self, bay: int) -> Any:
        return self.fault(f"DISK{bay}", "PULL")

    def insert_drive(self, bay: int) -> Any:
        return self.fault(f"DISK{bay}", "INSERT")

    def clear_drive(self, bay: int) -> Any:
        """Remove injected media errors and latency from a drive."""
        return self.fault(f"DISK{bay}", "CLEAR")

    def media_error(self, bay: int, lba: int, count: int = 1) -> Any:
        return self.fault(f"DISK{bay}", "MEDIA-ERROR", str(lba), str(count))

    def drive_latency(self, bay: int, ms: int) -> Any:
        return self.fault(f"DISK{bay}", "LATENCY", str(ms))

    def link_down(self, port: int) -> Any:
        """Cut a port's RSO heartbeat link (port 2: the recovery stops hearing heartbeats)."""
        return self.fault(f"LINK{port}", "DOWN")

    def link_up(self, port: int) -> Any:
        return self.fault(f"LINK{port}", "UP")

    def power_off(self, duration: float | None = None) -> Any:
        """Shelf power cut (connections drop); with a duration it comes back by itself."""
        words = ["SHELF", "POWER-OFF"]
        if duration is not None:
            words.append(f"DURATION={round(duration)}")
        return self.fault(*words)

    def power_on(self) -> Any:
        return self.fault("SHELF", "POWER-ON")

    def battery(self, action: str) -> Any:
        """FAULT BATTERY FAIL|REMOVE|LOW|RESTORE."""
        return self.fault("BATTERY", action.upper())

    def psu(self, n: int, action: str) -> Any:
        return self.fault(f"PSU{n}", action.upper())

    def fan(self, n: int, action: str) -> Any:
        return self.fault(f"FAN{n}", action.upper())

    def temperature(self, celsius: int) -> Any:
        return self.fault("TEMPERATURE", str(celsius))

    # -- path faults and command errors (docs/faults.md) -------------------------------
    def port_fault(self, port: int, action: str, value: float | None = None, *, initiator: str | None = None) -> Any:
        """FAULT PORTn DOWN|UP|RESET|BLACKHOLE|DELAY ms|FLAP s|CLEAR [INITIATOR=iqn]."""
        words = [f"PORT{port}", action.upper(), *([f"{value:g}"] if value is not None else [])]
        return self.fault(*words, *([f"INITIATOR={initiator}"] if initiator else []))

    def reinstate_session(self, initiator: str) -> Any:
        """FAULT SESSION INITIATOR=iqn REINSTATE: drop its connections, refuse its old ISIDs."""
        return self.fault("SESSION", f"INITIATOR={initiator}", "REINSTATE")

    def inject(self, unit: int, op: str | int = "ANY", error: str = "MEDIUM", *,
               lba: tuple[int, int] | int | None = None, count: int | None = 1, initiator: str | None = None,
               port: int | None = None) -> int:
        """INJECT UNIT ...: `op` READ, WRITE, ANY or an opcode; `error` MEDIUM, HARDWARE, NOT-READY, ABORTED,
        BUSY, TASK-SET-FULL, TIMEOUT, SENSE=k/asc/ascq or DELAY=ms; `lba` a block or (first, last);
        `count` None: always. The injection's id."""
        words = ["INJECT", "UNIT", str(unit), f"OP={op:#04x}" if isinstance(op, int) else f"OP={op}"]
        if lba is not None:
            first, last = (lba, lba) if isinstance(lba, int) else lba
            words.append(f"LBA={first}-{last}")
        words.append("COUNT=ALWAYS" if count is None else f"COUNT={count}")
        if initiator:
            words.append(f"INITIATOR={initiator}")
        if port is not None:
            words.append(f"PORT={port}")
        return int(self.ctl(*words, f"ERROR={error}")["id"])

    def injections(self) -> list[dict[str, Any]]:
        """SHOW INJECTIONS: each with its remaining count and how often it fired."""
        return list(self.ctl("SHOW", "INJECTIONS"))

    def clear_injections(self) -> int:
        """DELETE INJECTION ALL; how many there were."""
        return int(self.ctl("DELETE", "INJECTION", "ALL")["deleted"])

    # -- RSO through the management side ---------------------------------------------
    def rso_enable(self, timeout: float | None = None, act_alone: bool | None = None) -> dict[str, Any]:
        """RSO ENABLE [TIMEOUT=s] [ACT_ALONE=YES|NO]: port 1 primary, port 2 standby."""
        words = ["RSO", "ENABLE"]
        if timeout is not None:
            words.append(f"TIMEOUT={timeout:g}")
        if act_alone is not None:
            words.append(f"ACT_ALONE={'YES' if act_alone else 'NO'}")
        return dict(self.ctl(*words))

    def rso_disable(self) -> dict[str, Any]:
        return dict(self.ctl("RSO", "DISABLE"))

    def rso_status(self) -> dict[str, Any]:
        """RSO STATUS as JSON: state, failed_over, fenced_port, active_port, heartbeats, ..."""
        return dict(self.ctl("RSO", "STATUS"))

    def rso_failover(self) -> dict[str, Any]:
        """RSO FAILOVER from the management side (the F8 key)."""
        return dict(self.ctl("RSO", "FAILOVER"))

    def rso_restore(self, *, logout_recovery: bool = True, timeout: float = 5.0) -> dict[str, Any]:
        """RSO RESTORE. The array refuses while the recovery is logged in on port 2, so by default
        the handle first logs out its own recovery session (others' sessions still block it)."""
        if logout_recovery:
            with self._roles_lock:
                role = self._roles.pop("recovery", None)
            if role is not None:
                role.close(logout=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(self.ctl("RSO", "RESTORE"))
            except CtlError as exc:  # the logout may still be on its way
                if "logged in" not in exc.error or time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    # -- RSO through the vendor SCSI commands -------------------------------------------
    def _role(self, role: str) -> RoleSession:
        with self._roles_lock:
            s = self._roles.get(role)
            if s is None:
                port, name = 1 if role == "primary" else 2, f"{INITIATOR_PREFIX}:{role}"
                s = self._roles[role] = RoleSession(lambda clear: self._login(port, name, clear=clear), port, name)
            return s

    def _vendor(self, role: str, opcode: int, what: str, alloc: int = 16, data: bytes = b"") -> CommandResult:
        session = self._role(role)
        if data:
            r = session.scsi(0, vendor_cdb(opcode, len(data)), data=data)
        else:
            r = session.scsi(0, vendor_cdb(opcode, alloc), read_len=alloc)
        if r.status != 0:
            raise ScsiError(f"{what} from port {session.port}", r)
        return r

    def heartbeat(self) -> RsoBlock:
        """HEARTBEAT (C0h) from port 1 on LUN 0, on the handle's primary session."""
        return RsoBlock.from_bytes(self._vendor("primary", HEARTBEAT, "HEARTBEAT (C0h)").data)

    def acknowledge(self) -> RsoBlock:
        """ACKNOWLEDGE (C1h) from port 2 on LUN 0, on the handle's recovery session."""
        return RsoBlock.from_bytes(self._vendor("recovery", ACKNOWLEDGE, "ACKNOWLEDGE (C1h)").data)

    def force_failover(self) -> None:
        """FORCE FAILOVER (C3h) from port 2, as the recovery's pre-boot monitor sends it."""
        self._vendor("recovery", FORCE_FAILOVER, "FORCE FAILOVER (C3h)", alloc=0)

    def rso_configure(self, enabled: bool = True, timeout: float = 0.0, act_alone: bool = False) -> None:
        """CONFIGURE (C4h) from port 1, as the primary's agent does (timeout 0: keep the current one)."""
        params = ConfigureParams.of(enabled, timeout, act_alone).to_bytes()
        self._vendor("primary", CONFIGURE, "CONFIGURE (C4h)", data=params)

    @contextmanager
    def heartbeating(self, interval: float | None = None, *, acknowledge: bool = False) -> Iterator[Heartbeat]:
        """Heartbeat from port 1 in the background while the block runs (the primary is alive);
        with acknowledge=True the recovery acknowledges from port 2 too. Interval: a quarter
        of the RSO timeout unless given."""
        if interval is None:
            interval = max(0.05, float(self.rso_status().get("timeout_s") or 1.0) / 4)
        beat = Heartbeat(self, interval, acknowledge).start()
        try:
            yield beat
        finally:
            beat.stop()

    # -- snapshots of the whole shelf (docs/snapshots.md) ----------------------------------
    def snapshot_save(self, name: str) -> dict[str, Any]:
        """SNAPSHOT SAVE name: drive images, NVRAM, cache, reservations, events (a taken name is refused)."""
        return dict(self.ctl("SNAPSHOT", "SAVE", name))

    def snapshot_restore(self, name: str) -> dict[str, Any]:
        """SNAPSHOT RESTORE name: sessions stay logged in and see 29/00 (and 3F/0E if the LUNs differ)."""
        return dict(self.ctl("SNAPSHOT", "RESTORE", name))

    def snapshots(self) -> list[dict[str, Any]]:
        """SNAPSHOT LIST: each with name, taken (epoch seconds), files, size_bytes, stored_bytes, method."""
        return list(self.ctl("SNAPSHOT", "LIST"))

    def snapshot_delete(self, name: str) -> dict[str, Any]:
        return dict(self.ctl("SNAPSHOT", "DELETE", name))

    def reset(self) -> dict[str, Any]:
        """RESET: the shelf as it was right after start; path faults and injections end too."""
        return dict(self.ctl("RESET"))

    # -- scenario files (msa500_emu.scenario, docs/scenarios.md) -------------------------
    def run_scenario(self, path: str | Path, *, check: bool = True) -> Any:
        """Run a scenario file against this array on the wall clock; its Result (`.ok`, `.text()`).
        check=True raises MSA500Error with the timeline when a check failed."""
        from ..scenario import ScenarioError, run_on

        try:
            result = run_on(self, path)
        except ScenarioError as exc:
            raise MSA500Error(f"scenario {path}: {exc}") from None
        if check and not result.ok:
            raise MSA500Error(f"scenario {path} failed:\n{result.text()}")
        return result

    # -- waiting -----------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.1,
                 message: str | None = None) -> T:
        """Call predicate() until it returns something true; that value. WaitTimeout after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                what = message or getattr(predicate, "__name__", "condition")
                raise WaitTimeout(f"msa500: {what} not reached within {timeout:g} s")
            time.sleep(min(interval, left))

    def wait_for_failover(self, timeout: float = 10.0, *, as_recovery: bool = False) -> dict[str, Any]:
        """Wait until RSO has failed over (port 1 fenced, port 2 active); the RSO status.

        as_recovery=True plays the recovery's monitor meanwhile: ACKNOWLEDGE from port 2 and,
        once the answer says TAKE_OVER, FORCE FAILOVER (needed unless RSO acts alone).
        """
        def failed_over() -> dict[str, Any] | None:
            if as_recovery:
                block = self.acknowledge()
                if block.take_over and not block.failed_over:
                    self.force_failover()
            st = self.rso_status()
            return st if st.get("failed_over") else None

        try:
            return self.wait_for(failed_over, timeout, message="RSO failover")
        except WaitTimeout as exc:
            st = self.rso_status()
            raise WaitTimeout(f"{exc} (RSO state {st.get('state')}, heartbeat age {st.get('heartbeat_age_s')} s, "
                              f"timeout {st.get('timeout_s')} s, act_alone {st.get('act_alone')})") from None

    def wait_for_unit_state(self, lun: int, state: str = "ok", timeout: float = 60.0,
                            interval: float = 0.2) -> dict[str, Any]:
        """Wait until unit `lun` is in `state` (ok, interim recovery, rebuilding, expanding, failed,
        or powered-off: the vocabulary of `ctl WAIT UNIT`); the unit's view. WaitTimeout after
        `timeout` s; MSA500Error at once when the state can no longer come (the unit failed, or is gone)."""
        try:
            target = watch.parse_state(state)
        except CommandError as exc:
            raise ValueError(str(exc)) from None
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            u = watch.find(self.units(), lun)
            why = watch.impossible(u, lun, target)
            if why is not None:
                raise MSA500Error(f"msa500: {why} (waiting for {target})")
            assert u is not None
            last.update(u)
            return u if watch.unit_state(u) == target else None

        try:
            return self.wait_for(reached, timeout, interval, message=f"unit {lun} {target}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc} (unit {lun} is {render.unit_state(last) if last else 'unknown'})") from None

    # -- iSCSI sessions ------------------------------------------------------------------
    def _login(self, port: int, name: str, clear: Sequence[int] | None = (0,),
               config: InitiatorConfig | None = None) -> Initiator:
        return login(LOOPBACK, self.tcp_port(port), self.target, name, clear, config)

    def initiator(self, port: int = 1, name: str | None = None, *, clear: Sequence[int] | None = None,
                  config: InitiatorConfig | None = None) -> Initiator:
        """A logged-in session on a controller port (the project's blocking Initiator: read,
        write, scsi, test_unit_ready ...), the unit attentions of a new nexus consumed on the
        `clear` LUNs (default: every LUN REPORT LUNS lists). Each call is a new I_T nexus; the
        handle closes them when the array stops."""
        name = name or f"{INITIATOR_PREFIX}:host{next(self._names)}"
        ini = self._login(port, name, clear, config)
        self._initiators.append(ini)
        return ini

    def close_sessions(self) -> None:
        """Close every session the handle opened (role sessions and initiator())."""
        with self._roles_lock:
            roles = list(self._roles.values())
            self._roles.clear()
        for role in roles:
            with role.lock:
                role.close()
        for ini in self._initiators:
            ini.close()
        self._initiators.clear()
