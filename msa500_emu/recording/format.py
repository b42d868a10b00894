"""The recording's file format (docs/recording.md): JSON lines, a header first, one record a line.

One definition of each field: the recorder writes records with the functions here and the replay
reads them back through `read`, which checks every line (type, required fields, their kinds) so a
truncated or garbled file is one RecordingError naming the line, before any array is started.
Digests are CRC32C (the project's iSCSI digest, 20 GB/s): a recording finds divergences, it does
not defend against forgery.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c

from firmware_model.scsi.types import DataDirection

FORMAT = "msa500-emu-recording"
VERSION = 1
MIB = 1 << 20
DEFAULT_DATA_CAP = 64 * MIB  # data-out kept in full per recording; beyond it, digests only
MAX_LINE = 64 * MIB  # the longest line `read` accepts (a record with 48 MiB of data-out)
DIRECTIONS = {d: d.name.lower() for d in DataDirection}  # "none", "read", "write"
TYPES = ("scsi", "op", "event", "note", "end")


class RecordingError(Exception):
    """A file that is not a recording this replay can read: one line naming the file and the line."""


def digest(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """{"len": bytes, "crc32c": 8 hex digits}: what a recording keeps of a payload."""
    return {"len": len(data), "crc32c": f"{crc32c.crc32c(data):08x}"}


def split_nexus(initiator_port: str) -> tuple[str, str]:
    """("iqn...", "0x<ISID>") from the iSCSI initiator port name "iqn...,i,0x<ISID>"."""
    name, sep, isid = initiator_port.rpartition(",i,")
    return (name, isid) if sep else (initiator_port, "")


def encode_data(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------ the header
def header(*, emulator: str, started_at: str, started_unix: float, data_cap: int, config: str,
           setup: list[dict[str, Any]], state: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "emulator": emulator, "started_at": started_at,
            "started_unix": started_unix, "data_cap": data_cap, "config": config, "setup": setup, "state": state}


def toml_value(value: Any) -> str:
    """A TOML value of a str, bool, int, float or list of them (JSON strings are TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_table(name: str, items: dict[str, Any], *, array: bool = False) -> list[str]:
    head = f"[[{name}]]" if array else f"[{name}]"
    return [head, *(f"{k} = {toml_value(v)}" for k, v in items.items() if v is not None)]


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Outcome:
    """What a command got: compared field by field between the recording and the replay."""

    status: int | None  # None: no answer at all (an injected TIMEOUT)
    sense_key: int = 0
    asc: int = 0
    ascq: int = 0
    data_len: int = 0
    data_crc: str = ""

    def text(self) -> str:
        if self.status is None:
            return "no answer"
        out = f"status {self.status:#04x}"
        if self.status == 0x02:
            out += f", sense {self.sense_key:X}/{self.asc:02X}/{self.ascq:02X}"
        if self.data_len:
            out += f", data-in {self.data_len} bytes crc32c {self.data_crc}"
        return out


def sense_fields(sense: bytes) -> tuple[int, int, int]:
    """(key, ASC, ASCQ) of fixed (70h/71h) or descriptor (72h/73h) sense data; zeros when there is none."""
    if len(sense) < 4:
        return 0, 0, 0
    if sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    if len(sense) < 14:
        return sense[2] & 0x0F, 0, 0
    return sense[2] & 0x0F, sense[12], sense[13]


@dataclass(frozen=True)
class Command:
    """One recorded SCSI command, as the replay re-issues it."""

    n: int
    t: float
    initiator: str
    isid: str
    port: int
    lun: int
    cdb: bytes
    direction: str
    edtl: int
    out_len: int
    out_data: bytes | None  # None: beyond the data cap (only the digest was kept)
    expected: Outcome
    held_s: float | None  # an injected DELAY held the answer this long

    @property
    def nexus(self) -> tuple[str, str, int]:
        return self.initiator, self.isid, self.port


_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "scsi": {"initiator": str, "isid": str, "port": int, "lun": int, "cdb": str, "dir": str, "edtl": int,
             "status": (int, type(None)), "sense": str},
    "op": {"op": str, "args": dict},
    "event": {"code": str},
    "note": {"text": str},
    "end": {"records": int},
}


def _check(line_no: int, rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise RecordingError(f"{where} line {line_no}: not a JSON object")
    kind = rec.get("type")
    if kind not in _FIELDS:
        raise RecordingError(f"{where} line {line_no}: unknown record type {kind!r} (known: {', '.join(TYPES)})")
    for key in ("n", "t"):
        if not isinstance(rec.get(key), int | float) or isinstance(rec.get(key), bool):
            raise RecordingError(f"{where} line {line_no}: {kind} record without its {key}")
    for key, kinds in _FIELDS[kind].items():
        value = rec.get(key)
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
            raise RecordingError(f"{where} line {line_no}: {kind} record {rec.get('n')}: field {key} missing or "
                                 "of the wrong kind")
    return rec


def command(rec: dict[str, Any], where: str = "recording") -> Command:
    """The Command of a checked scsi record (RecordingError for a bad hex or base64 field)."""
    try:
        cdb = bytes.fromhex(rec["cdb"])
        sense = bytes.fromhex(rec["sense"])
        out = rec.get("out") or {}
        data = base64.b64decode(out["data"], validate=True) if out.get("data") is not None else None
        din = rec.get("in") or {}
        key, asc, ascq = sense_fields(sense)
        expected = Outcome(rec["status"], key, asc, ascq, int(din.get("len", 0)), str(din.get("crc32c", "")))
        if rec["dir"] not in DIRECTIONS.values():
            raise ValueError(f"direction {rec['dir']!r}")
        return Command(int(rec["n"]), float(rec["t"]), rec["initiator"], rec["isid"], rec["port"], rec["lun"], cdb,
                       rec["dir"], rec["edtl"], int(out.get("len", 0)), data, expected, rec.get("held_s"))
    except (ValueError, TypeError, KeyError) as exc:
        raise RecordingError(f"{where}: scsi record {rec.get('n')}: bad field ({exc})") from None


def read_header(first: bytes, where: str) -> dict[str, Any]:
    try:
        head = json.loads(first)
    except ValueError:
        raise RecordingError(f"{where}: line 1 is not a JSON header (not a recording?)") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RecordingError(f"{where}: not a {FORMAT} file (its first line names no such format)")
    version = head.get("version")
    if version != VERSION:
        raise RecordingError(f"{where}: format version {version}; this emulator reads version {VERSION}")
    for key, kind in (("config", str), ("state", dict), ("setup", list), ("started_at", str)):
        if not isinstance(head.get(key), kind):
            raise RecordingError(f"{where}: the header has no {key}")
    return head


def read(path: Path) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header, and an iterator over the checked records (read lazily: a long recording is never
    held in memory). Call `validate` first to turn a bad line into an error before anything runs."""
    where = str(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise RecordingError(f"{where}: {exc.strerror or exc}") from None
    first = f.readline(MAX_LINE + 1)
    if not first:
        f.close()
        raise RecordingError(f"{where}: empty file")
    try:
        head = read_header(first, where)
    except RecordingError:
        f.close()
        raise

    def records() -> Iterator[dict[str, Any]]:
        with f:
            line_no = 1
            while True:
                line = f.readline(MAX_LINE + 1)
                if not line:
                    return
                line_no += 1
                if len(line) > MAX_LINE:
                    raise RecordingError(f"{where} line {line_no}: longer than {MAX_LINE // MIB} MiB")
                if not line.endswith(b"\n"):
                    raise RecordingError(f"{where} line {line_no}: cut short (the file is truncated)")
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise RecordingError(f"{where} line {line_no}: not JSON ({getattr(exc, 'msg', exc)})") from None
                rec = _check(line_no, rec, where)
                if rec["type"] == "scsi":
                    command(rec, f"{where} line {line_no}")
                yield rec

    return head, records()


def validate(path: Path) -> tuple[dict[str, Any], int, bool]:
    """The header, how many SCSI commands the file holds and whether it has its end record;
    RecordingError for the first bad line."""
    head, records = read(path)
    commands, ended = 0, False
    for rec in records:
        if ended:
            raise RecordingError(f"{path}: record {rec['n']} after the end record")
        commands += rec["type"] == "scsi"
        ended = rec["type"] == "end"
    return head, commands, ended
