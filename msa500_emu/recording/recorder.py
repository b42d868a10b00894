"""Writing a recording: every SCSI command, registry operation and event of a running emulator.

The recorder sits on three hooks of the process: the target's `observer` (one call per command),
`Emulator.operate` (every operation but the views) and the event callback. It writes one JSON line
per record through a buffered file (flushed at least once a second and at every operation), so
memory holds one buffer whatever the recording's length. Data-out is kept in full up to the data
cap (the replay needs the bytes), then as digests only; data-in is always a digest. A write error
stops the recording (logged once, shown by RECORD STATUS); it never touches host I/O.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from firmware_model import operations as ops
from firmware_model.scsi.injection import HeldResult
from firmware_model.scsi.types import DataDirection, Nexus, ScsiRequest, ScsiResult

from .. import __version__
from ..management.grammar import CommandError
from . import format as fmt
from .state import config_toml, setup_ops, start_state

log = logging.getLogger(__name__)

BUFFER_BYTES = 1 << 20
FLUSH_EVERY_S = 1.0
RECORDINGS_DIR = "recordings"  # a relative file name is a file here, under the state directory
OWN_OPS = frozenset({"record_start", "record_stop", "record_status"})  # never recorded, never replayed
NOT_RECORDED = ops.VIEWS | OWN_OPS
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class Recorder:
    """One recording being written. Runs on the emulator's event loop, like everything it hears."""

    def __init__(self, path: Path, f: BinaryIO, data_cap: int) -> None:
        self.path = path
        self._f: BinaryIO | None = f
        self.data_cap = data_cap
        self.started = time.monotonic()
        self._flushed = self.started
        self.records = self.commands = self.operations = self.events = 0
        self.bytes = 0
        self.data_kept = 0
        self.capped = False
        self.error: str | None = None
        self.ended = ""
        self._nexus: dict[Nexus, str] = {}  # the nexus fields of a scsi record, JSON, per nexus

    def _write(self, rec: dict[str, Any]) -> None:
        """One record of any type through the JSON encoder (the rare ones: operations, events, notes)."""
        self._line(_ENCODE(rec)[1:-1], flush=True)

    def _line(self, body: str, flush: bool = False) -> None:
        """Write `{"n":..,"t":..,<body>}`: `body` is the record's own fields, already JSON."""
        f = self._f
        if f is None:
            return
        self.records += 1
        now = time.monotonic()
        line = f'{{"n":{self.records},"t":{now - self.started:.6f},{body}}}\n'.encode()
        try:
            f.write(line)
            if flush or now - self._flushed >= FLUSH_EVERY_S:
                f.flush()
                self._flushed = now
        except OSError as exc:
            self._fail(exc)
            return
        self.bytes += len(line)

    def _fail(self, exc: Exception) -> None:
        self.error = f"writing {self.path} failed: {exc}"
        log.error("recording stopped: %s", self.error)
        f, self._f = self._f, None
        try:
            if f is not None:
                f.close()
        except OSError:
            pass

    def header(self, head: dict[str, Any]) -> None:
        assert self._f is not None
        line = (_ENCODE(head) + "\n").encode()
        self._f.write(line)
        self._f.flush()
        self.bytes += len(line)

    # -- the hooks ------------------------------------------------------------------------
    def scsi(self, req: ScsiRequest, res: ScsiResult) -> None:
        """ScsiTarget.observer: one command and the firmware's answer.

        The line is formatted here, not by the JSON encoder: this runs once per host command, and
        every field but the nexus (encoded once per nexus) is a number or hex or base64 text.
        """
        if self._f is None:
            return
        try:
            nexus = self._nexus.get(req.nexus)
            if nexus is None:
                name, isid = fmt.split_nexus(req.nexus.initiator)
                nexus = self._nexus[req.nexus] = (f'"initiator":{_ENCODE(name)},"isid":{_ENCODE(isid)},'
                                                  f'"port":{int(req.nexus.port)}')
            parts = [f'"type":"scsi",{nexus},"lun":{int(req.lun)},"cdb":"{bytes(req.cdb).hex()}",'
                     f'"dir":"{fmt.DIRECTIONS[req.direction]}","edtl":{int(req.expected_length)}']
            out = req.data_out
            if out:
                d = fmt.digest(out)
                kept = ""
                if not self.capped and self.data_kept + len(out) <= self.data_cap:
                    kept = f',"data":"{fmt.encode_data(out)}"'
                    self.data_kept += len(out)
                elif not self.capped:
                    self.capped = True
                    self._write({"type": "note", "text": f"data-out cap of {self.data_cap} bytes reached: later "
                                                         "data-out is kept as digests only"})
                parts.append(f',"out":{{"len":{d["len"]},"crc32c":"{d["crc32c"]}"{kept}}}')
            held = res.hold_s if isinstance(res, HeldResult) else 0.0
            if held is None:  # an injected TIMEOUT: the host never hears back
                parts.append(',"status":null,"sense":""')
            else:
                if held:
                    parts.append(f',"held_s":{float(held)!r}')
                if req.direction == DataDirection.READ and res.data:
                    d = fmt.digest(memoryview(res.data)[: req.expected_length])
                    parts.append(f',"in":{{"len":{d["len"]},"crc32c":"{d["crc32c"]}"}}')
                parts.append(f',"status":{int(res.status)},"sense":"{bytes(res.sense).hex()}"')
            self.commands += 1
            self._line("".join(parts))
        except Exception:  # a bug here must not reach the host's command
            log.exception("recording a command failed")

    def operation(self, name: str, args: dict[str, Any], error: BaseException | None) -> None:
        """Emulator.operate: a registry operation that ran (views and the recorder's own are left out)."""
        if self._f is None or name in NOT_RECORDED:
            return
        self.operations += 1
        self._write({"type": "op", "op": name, "args": _jsonable(args),
                     "error": None if error is None else str(error)})

    def event(self, event: Any) -> None:
        """The emulator's event callback: a firmware event as the event log keeps it."""
        if self._f is None:
            return
        self.events += 1
        self._write({"type": "event", "id": getattr(event, "id", None), "code": str(getattr(event, "code", "")),
                     "severity": str(getattr(event, "severity", "")), "message": str(getattr(event, "message", "")),
                     "bay": getattr(event, "bay", None), "array": getattr(event, "array", None),
                     "lun": getattr(event, "lun", None)})

    # -- the end ------------------------------------------------------------------------
    def close(self, reason: str) -> dict[str, Any]:
        if self._f is not None:
            self._write({"type": "end", "records": self.records + 1, "commands": self.commands, "reason": reason})
            f, self._f = self._f, None
            try:
                f.close()
            except OSError as exc:
                self.error = f"closing {self.path} failed: {exc}"
        self.ended = reason
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"recording": self._f is not None, "file": str(self.path), "records": self.records,
                "commands": self.commands, "operations": self.operations, "events": self.events,
                "bytes": self.bytes, "data_kept_bytes": self.data_kept, "data_cap_bytes": self.data_cap,
                "capped": self.capped, "seconds": round(time.monotonic() - self.started, 3), "error": self.error}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


# ------------------------------------------------------------------------------ lifecycle
def resolve(state_dir: Path, name: str) -> Path:
    """Where RECORD START `name` writes: a file of the state directory's recordings/. A plain name
    only: the API (anyone with its token) must not choose where the emulator writes."""
    if not name.strip() or name.strip() != name or name.startswith(".") or "/" in name or "\\" in name:
        raise CommandError(f"{name!r} is not a file name (letters, digits, '.', '-', '_': it goes under "
                           f"{Path(state_dir) / RECORDINGS_DIR})")
    return Path(state_dir) / RECORDINGS_DIR / name


def start(emulator: Any, file: str, data_cap: int | None = None, *, local: bool = False) -> dict[str, Any]:
    """Start recording `emulator` into `file`: for RECORD START a name under the state directory,
    never over an existing file; with `local` (serve --record) any path, replaced if it exists."""
    if emulator.recorder is not None:
        raise CommandError(f"already recording to {emulator.recorder.path} (RECORD STOP first)")
    ctl = emulator.shelf
    if ctl is None:
        raise CommandError("the array is not running")
    path = Path(file) if local else resolve(emulator.settings.state_dir, file)
    cap = fmt.DEFAULT_DATA_CAP if data_cap is None else data_cap
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "wb" if local else "xb", buffering=BUFFER_BYTES)  # the recorder owns it
    except FileExistsError:
        raise CommandError(f"{path} exists: a recording never overwrites a file (name another)") from None
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    rec = Recorder(path, f, cap)
    wall = time.time()
    head = fmt.header(emulator=__version__, started_at=datetime.fromtimestamp(wall, UTC).isoformat(
        timespec="milliseconds"), started_unix=round(wall, 3), data_cap=cap, config=config_toml(emulator),
        setup=setup_ops(emulator), state=start_state(emulator))
    try:
        rec.header(head)
    except OSError as exc:
        f.close()
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None
    emulator.recorder = rec
    ctl.target.observer = rec.scsi
    log.info("recording to %s (data-out kept up to %d bytes)", path, cap)
    return rec.status()


def stop(emulator: Any, reason: str = "stopped") -> dict[str, Any]:
    rec = emulator.recorder
    if rec is None:
        raise CommandError("no recording runs (RECORD START file first)")
    if emulator.shelf is not None:
        emulator.shelf.target.observer = None
    emulator.recorder = None
    summary = rec.close(reason)
    log.info("recording %s ended: %d records, %d commands", rec.path, rec.records, rec.commands)
    return summary


def operated(emulator: Any, name: str, args: dict[str, Any], error: BaseException | None) -> None:
    """After an operation: record it, and hear the target again if it replaced the controller
    (SNAPSHOT RESTORE, RESET open a new one)."""
    rec = emulator.recorder
    if rec is None:
        return
    rec.operation(name, args, error)
    if emulator.shelf is not None and emulator.shelf.target.observer is None:
        emulator.shelf.target.observer = rec.scsi


def status(emulator: Any) -> dict[str, Any]:
    rec = emulator.recorder
    return {"recording": False} if rec is None else rec.status()
