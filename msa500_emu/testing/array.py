"""A running emulated MSA500 for a test: start it, reach it, break it, drive RSO, stop it.

`start_array()` starts one on free loopback ports with its own state directory, either as a
`python -m msa500_emu serve` child process (`mode="subprocess"`, what a CI job runs) or on an
event loop in a background thread of the test process (`mode="inprocess"`, faster to start).
Both give the same handle (`MSA500`): portal URLs, the `ctl` command language over the HTTP
API, fault injection, the RSO vendor commands from the right port, waits with timeouts.
Nothing here depends on pytest; the fixtures are in `msa500_emu.testing.plugin`.
"""

from __future__ import annotations

import asyncio
import itertools
import json as _json
import logging
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload

from ..agents.scsi import STATES, StatusBlock
from ..iscsi.initiator import CommandResult, Initiator, InitiatorConfig, InitiatorError

if TYPE_CHECKING:
    from ..server import Emulator

T = TypeVar("T")

#: What `config=` accepts: None (the built-in default shelf), TOML text, or a TOML file.
ConfigSource = str | os.PathLike[str] | None

MODES = ("subprocess", "inprocess")
LOOPBACK = "127.0.0.1"
#: The directory that holds the msa500_emu and firmware_model packages this code runs from.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
INITIATOR_PREFIX = "iqn.2026-11.org.msa500-emu.testing"

# RSO vendor commands on LUN 0 (docs/rso-commands.md).
HEARTBEAT, ACKNOWLEDGE, RSO_STATUS, FORCE_FAILOVER, CONFIGURE = 0xC0, 0xC1, 0xC2, 0xC3, 0xC4
RSO_STATES = STATES


# ----------------------------------------------------------------------------------- errors
class MSA500Error(Exception):
    """Something the test harness could not do (the message says what and why)."""


class StartError(MSA500Error):
    """The emulator did not come up; the message carries the end of its log."""


class CtlError(MSA500Error):
    """A `ctl` command the array refused (`ok: false`): the array's one-line reason."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"ctl {command!r} refused: {error}")
        self.command = command
        self.error = error


class ScsiError(MSA500Error):
    """A SCSI command that did not end GOOD; `result` holds status and sense."""

    def __init__(self, what: str, result: CommandResult) -> None:
        key = result.sense_key
        asc, ascq = result.asc_ascq
        detail = f"status 0x{result.status:02x}"
        if result.sense:
            detail += f", sense key {key:02X}h ASC/ASCQ {asc:02X}h/{ascq:02X}h"
        super().__init__(f"{what}: {detail}")
        self.result = result
        self.status = result.status
        self.sense_key = key
        self.asc_ascq = (asc, ascq)


class WaitTimeout(AssertionError, TimeoutError):
    """A wait that ran out of time (an AssertionError, so pytest reports it as a failed check)."""


# ----------------------------------------------------------------------------- RSO answers
RsoBlock = StatusBlock  # the agents' decoder; `RsoBlock.parse(data)`


def mirror_shelf(serial: str = "TESTSHELF1", drive_size: str = "256MiB", size: str = "32MiB") -> str:
    """TOML of a small shelf: bays 1-2 a RAID 1 array "A" holding LUN 1 of `size` (starts in a second)."""
    return (f'[shelf]\nserial = "{serial}"\ndrive_size = "{drive_size}"\n'
            f'[[shelf.arrays]]\nname = "A"\nbays = [1, 2]\n'
            f'[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "1"\nsize = "{size}"\n')


def vendor_cdb(opcode: int, length: int = 0) -> bytes:
    """A 10-byte RSO CDB: opcode, reserved bytes, ALLOCATION / PARAMETER LIST LENGTH in 7-8."""
    return bytes([opcode, 0, 0, 0, 0, 0, 0]) + struct.pack(">H", length) + b"\0"


def report_luns(ini: Initiator) -> list[int]:
    """LUN 0 and the LUNs REPORT LUNS lists (flat or peripheral addressing)."""
    cdb = struct.pack(">BBBxxxIxx", 0xA0, 0, 0, 4096)
    r = ini.scsi(0, cdb, read_len=4096)
    for _ in range(5):
        if not (r.status == 2 and r.sense_key == 0x06):
            break
        r = ini.scsi(0, cdb, read_len=4096)
    luns = [0]
    if r.status == 0 and len(r.data) >= 8:
        n = struct.unpack_from(">I", r.data)[0] // 8
        for i in range(min(n, (len(r.data) - 8) // 8)):
            entry = r.data[8 + 8 * i : 16 + 8 * i]
            lun = ((entry[0] & 0x3F) << 8) | entry[1]
            if lun not in luns:
                luns.append(lun)
    return luns


class _RoleSession:
    """One iSCSI session kept open for a role (primary on port 1, recovery on port 2).

    Thread-safe (a background heartbeat may share it); a dropped connection is logged in again
    once before the command fails.
    """

    def __init__(self, array: MSA500, port: int, name: str) -> None:
        self.array = array
        self.port = port
        self.name = name
        self.lock = threading.Lock()
        self.ini: Initiator | None = None

    def scsi(self, lun: int, cdb: bytes, *, read_len: int = 0, data: bytes = b"") -> CommandResult:
        with self.lock:
            for attempt in range(2):
                try:
                    if self.ini is None:
                        self.ini = self.array._login(self.port, self.name, clear=(lun,))
                    r = self.ini.scsi(lun, cdb, read_len=read_len, data=data)
                    for _ in range(5):  # a UNIT ATTENTION (power on, reset) is not the answer
                        if not (r.status == 2 and r.sense_key == 0x06):
                            break
                        r = self.ini.scsi(lun, cdb, read_len=read_len, data=data)
                    return r
                except (OSError, InitiatorError):
                    self.close()
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def close(self, logout: bool = False) -> None:
        ini, self.ini = self.ini, None
        if ini is None:
            return
        if logout:
            try:
                ini.logout()
                return
            except (OSError, InitiatorError):
                pass
        ini.close()


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


# ------------------------------------------------------------------------------- the handle
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
        self._roles: dict[str, _RoleSession] = {}
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
    def _http(self, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        data = None if body is None else _json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
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
    def _role(self, role: str) -> _RoleSession:
        with self._roles_lock:
            s = self._roles.get(role)
            if s is None:
                port = 1 if role == "primary" else 2
                s = self._roles[role] = _RoleSession(self, port, f"{INITIATOR_PREFIX}:{role}")
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
        return RsoBlock.parse(self._vendor("primary", HEARTBEAT, "HEARTBEAT (C0h)").data)

    def acknowledge(self) -> RsoBlock:
        """ACKNOWLEDGE (C1h) from port 2 on LUN 0, on the handle's recovery session."""
        return RsoBlock.parse(self._vendor("recovery", ACKNOWLEDGE, "ACKNOWLEDGE (C1h)").data)

    def force_failover(self) -> None:
        """FORCE FAILOVER (C3h) from port 2, as the recovery's pre-boot monitor sends it."""
        self._vendor("recovery", FORCE_FAILOVER, "FORCE FAILOVER (C3h)", alloc=0)

    def rso_configure(self, enabled: bool = True, timeout: float = 0.0, act_alone: bool = False) -> None:
        """CONFIGURE (C4h) from port 1, as the primary's agent does (timeout 0: keep the current one)."""
        params = struct.pack(">BxxxI", (1 if enabled else 0) | (2 if act_alone else 0), round(timeout * 1000))
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

    # -- iSCSI sessions ------------------------------------------------------------------
    def _login(self, port: int, name: str, clear: Sequence[int] | None = (0,),
               config: InitiatorConfig | None = None) -> Initiator:
        cfg = config or InitiatorConfig(initiator_name=name)
        ini = Initiator(LOOPBACK, self.tcp_port(port), cfg)
        try:
            ini.login(self.target)
            for lun in report_luns(ini) if clear is None else clear:
                ini.clear_unit_attentions(lun)
        except BaseException:
            ini.close()
            raise
        return ini

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


# --------------------------------------------------------------------- subprocess mode
class RunningArray(MSA500):
    """The emulator as a child process (`python -m msa500_emu serve`); `proc` is the Popen."""

    mode = "subprocess"

    def __init__(self, state_dir: Path, config: Path | None, log: Path, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, *, startup_timeout: float = 30.0) -> None:
        super().__init__(state_dir, config, log, startup_timeout=startup_timeout)
        self.extra = list(extra)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None  # set by _start (start_array never returns without)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(self.state_dir),
               "--port1", f"{LOOPBACK}:{port1}", "--port2", f"{LOOPBACK}:{port2}", "--api", f"{LOOPBACK}:{api}"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.extra
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        # The child runs the code this module came from, whatever the current directory holds.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        if self.proc is not None and self.proc.stdout is not None:  # a restart: the old pipe is done
            self.proc.stdout.close()
        with open(self.log, "a" if append_log else "w") as logf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, cwd=PACKAGE_ROOT, env=env)
        self.proc = proc
        assert proc.stdout is not None
        banner: list[str] = []
        done = threading.Event()

        def read_banner() -> None:  # readline blocks: a thread keeps the startup timeout honest
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, ""):
                banner.append(line)
                if "msa500-emu ctl" in line:
                    break
            done.set()

        threading.Thread(target=read_banner, name="msa500-banner", daemon=True).start()
        done.wait(self.startup_timeout)
        text = "".join(banner)
        ports = dict(re.findall(r"port (\d): iSCSI portal 127\.0\.0\.1:(\d+)", text))
        target = re.search(r"serving (\S+)", text)
        api_url = re.search(r"management API: (http://\S+)/api/health", text)
        if not (done.is_set() and ports and target and api_url):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise StartError(f"msa500-emu did not start (exit {proc.returncode}): {text}\n{self.log_tail()}")
        self.target = target.group(1)
        self.port1, self.port2 = int(ports["1"]), int(ports["2"])
        self.api = api_url.group(1)

    def _stop(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash (no flush; the cache file must carry acknowledged writes)."""
        self.close_sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------- in-process mode
class _ThreadFilter(logging.Filter):
    def __init__(self, ident: int | None) -> None:
        super().__init__()
        self.ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


_LOGGERS = ("msa500_emu", "firmware_model")
_log_lock = threading.Lock()
_log_users = 0
_log_levels_set: list[str] = []


def _acquire_loggers(level: str) -> None:
    """In-process arrays log through `logging`: open the emulator's loggers at its level (once)."""
    global _log_users
    with _log_lock:
        _log_users += 1
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(level.upper())
                _log_levels_set.append(name)


def _release_loggers() -> None:
    global _log_users
    with _log_lock:
        _log_users -= 1
        if _log_users <= 0:
            _log_users = 0
            for name in _log_levels_set:
                logging.getLogger(name).setLevel(logging.NOTSET)
            _log_levels_set.clear()


class InProcessArray(MSA500):
    """The emulator on its own event loop in a background thread of the test process.

    `emulator` is the `msa500_emu.server.Emulator`; it is not thread-safe: reach into it with
    `call(fn, ...)`, which runs fn on the emulator's loop.
    """

    mode = "inprocess"

    def __init__(self, state_dir: Path, config: Path | None, log: Path, *, startup_timeout: float = 30.0) -> None:
        super().__init__(state_dir, config, log, startup_timeout=startup_timeout)
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handler: logging.Handler | None = None

    @property
    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and self.emulator is not None
                and self.emulator.shelf is not None)

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        from ..config import ConfigError, load
        from ..server import Emulator

        try:
            settings = load(self.config, {
                "state_dir": str(self.state_dir), "port1": f"{LOOPBACK}:{port1}",
                "port2": f"{LOOPBACK}:{port2}", "api": f"{LOOPBACK}:{api}",
            })
        except ConfigError as exc:
            raise StartError(f"msa500-emu configuration error: {exc}") from exc
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=f"msa500-{self.state_dir.name}",
                                  daemon=True)
        thread.start()
        handler = logging.FileHandler(self.log, mode="a" if append_log else "w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ThreadFilter(thread.ident))
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(handler)
        _acquire_loggers(settings.log_level)
        self._loop, self._thread, self._handler = loop, thread, handler

        async def start() -> Emulator:
            emulator = Emulator(settings)
            await emulator.start()
            logging.getLogger("msa500_emu").info("in-process array started:\n%s", emulator.banner())
            return emulator

        try:
            self.emulator = asyncio.run_coroutine_threadsafe(start(), loop).result(self.startup_timeout)
        except BaseException as exc:
            self._shutdown_loop()
            if isinstance(exc, Exception):
                raise StartError(f"msa500-emu did not start in-process: {exc}\n{self.log_tail()}") from exc
            raise
        em = self.emulator
        assert em is not None and em.shelf is not None
        by_port = {p.info.port: p.info.tcp_port for p in em.portals}
        self.target = em.shelf.identity.target_name
        self.port1, self.port2 = by_port[1], by_port[2]
        self.api = f"http://{LOOPBACK}:{em.api_port}"

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) on the emulator's event loop (e.g. reading the controller)."""
        if self._loop is None or not self.alive:
            raise MSA500Error("the in-process array is not running")

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def _shutdown_loop(self) -> None:
        loop, thread, handler = self._loop, self._thread, self._handler
        self._loop = self._thread = self._handler = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        if handler is not None:
            for name in _LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
            _release_loggers()

    def _stop(self) -> int:
        emulator, loop = self.emulator, self._loop
        self.emulator = None
        rc = 0
        if emulator is not None and loop is not None and loop.is_running():

            async def stop() -> None:
                # Python 3.11's asyncio.wait_for swallows a cancel that meets a completed wait
                # (an event woke the timer task that very moment), and Emulator.stop() cancels
                # its timer task once: cancel it until it is really done, then stop.
                ticker = getattr(emulator, "_ticker", None)
                while isinstance(ticker, asyncio.Task) and not ticker.done():
                    ticker.cancel()
                    await asyncio.wait({ticker}, timeout=0.2)
                await emulator.stop()

            try:
                asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
            except Exception:
                logging.getLogger("msa500_emu").exception("in-process array did not stop cleanly")
                rc = 1
        self._shutdown_loop()
        return rc


# ------------------------------------------------------------------------------ starting
def _config_path(config: ConfigSource, state_dir: Path) -> Path | None:
    """None, a TOML file, or TOML text (written beside the state directory)."""
    if config is None:
        return None
    if isinstance(config, str):
        if "\n" not in config and "=" not in config and config.strip().endswith(".toml"):
            return Path(config).resolve()  # a file name given as a string
        path = state_dir.parent / f"{state_dir.name}.toml"
        path.write_text(config)
        return path
    return Path(config).resolve()


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: Literal["subprocess"] = "subprocess", log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> RunningArray: ...


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: Literal["inprocess"], log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> InProcessArray: ...


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: str, log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> MSA500: ...


def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: str = "subprocess", log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> MSA500:
    """Start an emulated MSA500 on free loopback ports (two iSCSI portals and the API).

    state_dir: the shelf's state (drive images, NVRAM); created if missing, reused if it holds
    a shelf. config: None (the built-in default shelf), TOML text, or a TOML file path. The log
    goes to `log` or `<state_dir>.log` beside the state directory. `extra` are more `serve`
    arguments and `env` more environment variables (subprocess mode only).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    sd = Path(state_dir).resolve()
    sd.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config_path(config, sd)
    log_path = Path(log).resolve() if log is not None else sd.parent / f"{sd.name}.log"
    array: MSA500
    if mode == "subprocess":
        array = RunningArray(sd, cfg, log_path, extra or (), env, startup_timeout=startup_timeout)
    else:
        if extra or env:
            raise ValueError("extra= and env= are for mode='subprocess' (in-process settings come from config=)")
        array = InProcessArray(sd, cfg, log_path, startup_timeout=startup_timeout)
    array._start(0, 0, 0, False)
    return array
