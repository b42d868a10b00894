"""Re-running a recording against a fresh array, and finding the first answer that differs.

Commands go over iSCSI with the project's own initiator, one session per recorded nexus (the same
initiator name and ISID, through the same controller port), in recorded order, one at a time;
operations are applied where they stand in the sequence, through RECORD APPLY (the registry row
by name, with its recorded arguments). By default the replay runs in order, not at recorded
times: what a timer did in the recorded run (a timed power-on) is done when its event comes up;
`at_recorded_times` waits for each record's offset instead, for runs that hang on timers (RSO
heartbeat timeouts, NOP timeouts, flapping ports).

Each command's outcome is compared: status, sense key/ASC/ASCQ, and the data-in's length and
CRC32C. Data-out beyond the recording's data cap was kept as a digest only: such writes are sent
as zeros, and data-in is not compared from there on (the report says from which record).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from firmware_model.scsi.injection import block_range
from firmware_model.scsi.stats import op_name

from ..iscsi.initiator import CommandResult, Initiator, InitiatorConfig, InitiatorError
from . import format as fmt
from .state import differences

CONNECT_TRIES = 100  # logins tried, CONNECT_PAUSE_S apart, before a nexus counts as unreachable
CONNECT_PAUSE_S = 0.1
COMMAND_TIMEOUT_S = 30.0
NO_ANSWER_WAIT_S = 2.0  # how long a command the recording says got no answer is given
PROGRESS_EVERY_S = 0.25  # a terminal's progress line is redrawn this often
PLAIN_EVERY = 10  # without a terminal: a line each tenth of the commands
CHECK_CONDITION = 0x02


@dataclass
class Divergence:
    n: int  # the record (0: the state at start)
    what: str
    expected: str
    got: str
    context: list[str] = field(default_factory=list)
    at: str = ""  # where in the recording: "command 14 of 20, 0.021 s in"

    def text(self) -> str:
        where = "the state at start" if self.n == 0 else f"record {self.n}"
        where += f" ({self.at})" if self.at else ""
        lines = [f"First divergence at {where}:", f"  {'what:':<10}{self.what}",
                 f"  {'expected:':<10}{self.expected}", f"  {'got:':<10}{self.got}"]
        return "\n".join(lines + [f"  {c}" for c in self.context])


@dataclass
class Result:
    commands: int = 0
    matched: int = 0
    operations: int = 0
    divergence: Divergence | None = None
    data_unverified_from: int | None = None  # the first record whose data-out the recording lacked
    ended: bool = False  # the recording has its end record
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def text(self) -> str:
        if self.divergence is not None:
            return self.divergence.text() + f"\n{self.matched} commands matched before it."
        out = [f"{self.commands} commands, all matched ({self.operations} operations applied)."]
        if self.data_unverified_from is not None:
            out.append(f"Data-in not compared from record {self.data_unverified_from} on: the recording kept "
                       "data-out beyond its data cap as digests only (writes were replayed as zeros).")
        if not self.ended:
            out.append("The recording has no end record: it was cut short (the emulator was killed?).")
        return "\n".join(out + self.notes)


def describe_command(cmd: fmt.Command) -> str:
    """`READ(16) LUN 1 LBA 2048, 8 blocks, from iqn.x ISID 0x80.. via port 1`."""
    words = [op_name(cmd.cdb), f"LUN {cmd.lun}"]
    rng = block_range(cmd.cdb)
    if rng is not None:
        words.append(f"LBA {rng[0]}, {rng[1]} blocks,")
    words.append(f"from {cmd.initiator} ISID {cmd.isid or '-'} via port {cmd.port}")
    return " ".join(words)


def outcome(r: CommandResult, direction: str) -> fmt.Outcome:
    key, asc, ascq = fmt.sense_fields(r.sense)
    d: dict[str, Any] = fmt.digest(r.data) if direction == "read" and r.data else {"len": 0, "crc32c": ""}
    return fmt.Outcome(r.status, key, asc, ascq, d["len"], d["crc32c"])


def same(want: fmt.Outcome, got: fmt.Outcome, data: bool) -> bool:
    if want.status != got.status:
        return False
    if want.status == CHECK_CONDITION and (want.sense_key, want.asc, want.ascq) != (got.sense_key, got.asc, got.ascq):
        return False
    return not data or (want.data_len, want.data_crc) == (got.data_len, got.data_crc)


class Sessions:
    """One logged-in session per recorded nexus (initiator name, ISID, controller port)."""

    def __init__(self, array: Any, host: str) -> None:
        self.array = array
        self.host = host
        self.open: dict[tuple[str, str, int], Initiator] = {}

    def get(self, nexus: tuple[str, str, int]) -> Initiator:
        ini = self.open.get(nexus)
        if ini is not None:
            return ini
        name, isid, port = nexus
        try:
            raw = bytes.fromhex(isid.removeprefix("0x"))
        except ValueError:
            raw = b""
        cfg = InitiatorConfig(initiator_name=name)
        if len(raw) == 6:
            cfg.isid = raw
        problem = ""
        for _ in range(CONNECT_TRIES):  # after a power-on the portals come back a moment later
            ini = None
            try:
                ini = Initiator(self.host, self.array.tcp_port(port), cfg, timeout=COMMAND_TIMEOUT_S)
                ini.login(self.array.target)
                self.open[nexus] = ini
                return ini
            except (OSError, InitiatorError) as exc:
                if ini is not None:
                    ini.close()
                problem = str(exc) or type(exc).__name__
                time.sleep(CONNECT_PAUSE_S)
        raise ConnectionError(f"cannot log in as {name} on port {port}: {problem}")

    def drop(self, nexus: tuple[str, str, int]) -> None:
        ini = self.open.pop(nexus, None)
        if ini is not None:
            ini.close()

    def close(self) -> None:
        for nexus in list(self.open):
            self.drop(nexus)


class Replay:
    """One replay of one recording against `array` (the test handle: in-process, or attached by URL)."""

    def __init__(self, array: Any, head: dict[str, Any], records: Iterator[dict[str, Any]], total: int, *,
                 at_recorded_times: bool = False, no_answer_wait: float = NO_ANSWER_WAIT_S,
                 progress: TextIO | None = None) -> None:
        self.array = array
        self.head = head
        self.records = records
        self.total = total
        self.timed = at_recorded_times
        self.no_answer_wait = no_answer_wait
        self.progress = progress
        self.tty = bool(progress is not None and progress.isatty())
        self.sessions = Sessions(array, urlsplit(array.api).hostname or "127.0.0.1")
        self.result = Result()
        self.last_op = ""
        self.timed_power_on = False
        self._drawn = 0.0

    # -- applying operations ------------------------------------------------------------------
    def apply(self, op: str, args: dict[str, Any]) -> str | None:
        """Run one registry operation on the array; None when it succeeded, else its one line."""
        from ..testing.errors import CtlError

        try:
            self.array.ctl("RECORD APPLY", op, f"ARGS={shlex.quote(json.dumps(args))}")
        except CtlError as exc:
            return exc.error
        return None

    def setup(self) -> Divergence | None:
        for step in self.head["setup"]:
            error = self.apply(str(step.get("op")), dict(step.get("args") or {}))
            if error is not None:
                return Divergence(0, f"setup operation {step.get('op')} {json.dumps(step.get('args'))}",
                                  "it succeeds", f"refused: {error}")
        state = self.head["state"]
        powered = bool(self.array.describe().get("powered", True))
        diff = differences(state, self.array.units(), self.array.rso_status(), powered)
        if diff:
            return Divergence(0, "the shelf before the first command", "as recorded", diff[0], diff[1:])
        for n in state.get("nexuses", []):  # hosts the array knew already: their unit attentions are old news
            nexus = (str(n["initiator"]), str(n["isid"]), int(n["port"]))
            try:
                ini = self.sessions.get(nexus)
                for lun in [0, *(int(u["lun"]) for u in state.get("units", []))]:
                    ini.clear_unit_attentions(lun)
            except (OSError, InitiatorError) as exc:
                return Divergence(0, f"the session of {nexus[0]} ISID {nexus[1]} on port {nexus[2]}",
                                  "it logs in", str(exc) or type(exc).__name__)
        return None

    def operation(self, rec: dict[str, Any]) -> Divergence | None:
        op, args = str(rec["op"]), dict(rec["args"])
        if op == "power_off" and args.get("duration") and not self.timed:
            args.pop("duration")  # in order: power comes back at its SHELF_POWER_ON record
            self.timed_power_on = True
        elif op == "power_on":
            self.timed_power_on = False
        error = self.apply(op, args)
        self.result.operations += 1
        self.last_op = f"last operation before it: record {rec['n']} {op} {json.dumps(rec['args'])}"
        if op in ("power_off", "power_on"):
            self.sessions.close()  # the shelf dropped every connection
        if (error is None) != (rec.get("error") is None):
            want = "it succeeds" if rec.get("error") is None else f"refused: {rec['error']}"
            got = "it succeeded" if error is None else f"refused: {error}"
            return Divergence(int(rec["n"]), f"operation {op} {json.dumps(rec['args'])}", want, got)
        return None

    def event(self, rec: dict[str, Any]) -> None:
        if rec["code"] == "SHELF_POWER_ON" and self.timed_power_on:
            self.timed_power_on = False
            self.apply("power_on", {})
            self.sessions.close()

    # -- commands -----------------------------------------------------------------------------
    def issue(self, cmd: fmt.Command) -> tuple[fmt.Outcome | None, str]:
        """The command's outcome on the array (None and why when no session could carry it)."""
        data = b""
        if cmd.direction == "write" or cmd.out_len:
            data = cmd.out_data if cmd.out_data is not None else bytes(cmd.out_len)
        wait = self.no_answer_wait if cmd.expected.status is None else \
            max(COMMAND_TIMEOUT_S, (cmd.held_s or 0.0) + COMMAND_TIMEOUT_S)
        problem = ""
        for _ in range(2):  # a connection the array dropped (power, port fault) is logged in again once
            try:
                ini = self.sessions.get(cmd.nexus)
            except ConnectionError as exc:
                return None, str(exc)
            try:
                ini.sock.settimeout(wait)
                r = ini.scsi(cmd.lun, cmd.cdb, read_len=cmd.edtl if cmd.direction == "read" else 0, data=data,
                             edtl=cmd.edtl)
                return outcome(r, cmd.direction), ""
            except TimeoutError:
                self.sessions.drop(cmd.nexus)  # the task stays held: a new login ends it
                return fmt.Outcome(None), ""
            except (OSError, InitiatorError) as exc:
                self.sessions.drop(cmd.nexus)
                problem = str(exc) or type(exc).__name__
        return None, f"the connection failed: {problem}"

    def command(self, cmd: fmt.Command) -> Divergence | None:
        self.result.commands += 1
        if cmd.out_data is None and cmd.out_len and self.result.data_unverified_from is None:
            self.result.data_unverified_from = cmd.n
        got, problem = self.issue(cmd)
        verify = self.result.data_unverified_from is None
        if got is not None and same(cmd.expected, got, verify):
            self.result.matched += 1
            return None
        context = [f"{'cdb:':<10}{cmd.cdb.hex()}"] + ([self.last_op] if self.last_op else [])
        return Divergence(cmd.n, describe_command(cmd), cmd.expected.text(),
                          problem if got is None else got.text(), context,
                          f"command {self.result.commands} of {self.total}, {cmd.t:.3f} s into the recording")

    # -- the run ------------------------------------------------------------------------------
    def _progress(self, final: bool = False) -> None:
        out, done, total = self.progress, self.result.commands, max(self.total, 1)
        if out is None:
            return
        if self.tty:
            now = time.monotonic()
            if final or now - self._drawn >= PROGRESS_EVERY_S:
                self._drawn = now
                width = 30
                filled = width * done // total
                out.write(f"\r  replay [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} commands"
                          + ("\n" if final else ""))
                out.flush()
        elif not final and self.total >= PLAIN_EVERY * 10 and done % (self.total // PLAIN_EVERY) == 0:
            out.write(f"replay: {done}/{self.total} commands ({100 * done // total} %)\n")
            out.flush()

    def run(self) -> Result:
        try:
            self.result.divergence = self.setup()
            started = time.monotonic()
            for rec in self.records if self.result.divergence is None else ():
                if self.timed:
                    left = started + float(rec["t"]) - time.monotonic()
                    if left > 0:
                        time.sleep(left)
                kind = rec["type"]
                found: Divergence | None = None
                if kind == "scsi":
                    found = self.command(fmt.command(rec))
                    self._progress()
                elif kind == "op":
                    found = self.operation(rec)
                elif kind == "event":
                    self.event(rec)
                elif kind == "end":
                    self.result.ended = True
                if found is not None:
                    self.result.divergence = found
                    break
        finally:
            self.sessions.close()
            if self.tty:
                self._progress(final=True)
        return self.result


def run(array: Any, path: Any, *, at_recorded_times: bool = False, no_answer_wait: float = NO_ANSWER_WAIT_S,
        progress: TextIO | None = None) -> Result:
    """Replay the recording at `path` against `array`; RecordingError for a bad file (checked first)."""
    _head, total, _ended = fmt.validate(path)
    head, records = fmt.read(path)
    return Replay(array, head, records, total, at_recorded_times=at_recorded_times, no_answer_wait=no_answer_wait,
                  progress=progress if progress is not None else sys.stderr).run()
