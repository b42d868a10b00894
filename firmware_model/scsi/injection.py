"""Per-command error injection, as Linux's scsi_debug and FreeBSD's `ctladm inject` offer.

An injection names a logical drive, which commands (READ, WRITE, ANY or one opcode), optionally a
block range, an initiator and a port, how many times it fires (or always), and the answer: CHECK
CONDITION with a given sense, BUSY or TASK SET FULL status, no answer at all (TIMEOUT), or the
real answer held back (DELAY). The target consults it once per command, after the unit attention
and ALUA gates (a medium error is the medium's answer, so it comes where the medium is reached);
with no live injection that costs one integer test.

TIMEOUT and DELAY need the transport: the answer is a `HeldResult` whose `hold_s` the iSCSI
connection honours (None: hold the task until ABORT TASK, a reset or the session's end).
Injections live in memory only: a restarted emulator has none (they are test scaffolding, not
controller configuration).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from firmware_model.clock import Clock
from firmware_model.scsi.catalog import Block10, Block12, Block16, Rw6
from firmware_model.scsi.constants import Asc, Opcode, SenseKey
from firmware_model.scsi.errors import ScsiError
from firmware_model.scsi.sense import build_sense
from firmware_model.scsi.stats import op_name
from firmware_model.scsi.stepped import Stepped, run_to_end
from firmware_model.scsi.types import ScsiRequest, ScsiResult, Status

Op = Opcode
READ_OPS = frozenset({Op.READ_6, Op.READ_10, Op.READ_12, Op.READ_16})
WRITE_OPS = frozenset({
    Op.WRITE_6, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16, Op.WRITE_AND_VERIFY_10, Op.WRITE_AND_VERIFY_12,
    Op.WRITE_AND_VERIFY_16, Op.WRITE_SAME_10, Op.WRITE_SAME_16, Op.COMPARE_AND_WRITE, Op.ORWRITE_16,
    Op.WRITE_ATOMIC_16,
})
# Commands that address blocks (an LBA range matches only these).
BLOCK_OPS = READ_OPS | WRITE_OPS | frozenset({
    Op.VERIFY_10, Op.VERIFY_12, Op.VERIFY_16, Op.PRE_FETCH_10, Op.PRE_FETCH_16,
    Op.SYNCHRONIZE_CACHE_10, Op.SYNCHRONIZE_CACHE_16,
})
OP_CLASSES = {"read": READ_OPS, "write": WRITE_OPS, "any": None}
TELL_EVERY_S = 1.0  # at most one INJECTION_FIRED notice per injection per second
MAX_INJECTIONS = 256


class ErrorKind(StrEnum):
    MEDIUM = "medium"
    HARDWARE = "hardware"
    NOT_READY = "not-ready"
    ABORTED = "aborted"
    BUSY = "busy"
    TASK_SET_FULL = "task-set-full"
    SENSE = "sense"
    TIMEOUT = "timeout"
    DELAY = "delay"


# The sense of each named error. MEDIUM answers 03/11/00 UNRECOVERED READ ERROR to reads and
# 03/0C/00 WRITE ERROR to the write family, as a drive does; HARDWARE is 04/44/00 INTERNAL TARGET
# FAILURE, the controller's own failure answer elsewhere (use SENSE=4/3E/1 for LOGICAL UNIT FAILURE).
_SENSE: dict[ErrorKind, tuple[SenseKey, Asc]] = {
    ErrorKind.MEDIUM: (SenseKey.MEDIUM_ERROR, Asc.UNRECOVERED_READ_ERROR),
    ErrorKind.HARDWARE: (SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE),
    ErrorKind.NOT_READY: (SenseKey.NOT_READY, Asc.NOT_READY_CAUSE_NOT_REPORTABLE),
    ErrorKind.ABORTED: (SenseKey.ABORTED_COMMAND, Asc.NO_ADDITIONAL_SENSE),
}
_STATUS = {ErrorKind.BUSY: Status.BUSY, ErrorKind.TASK_SET_FULL: Status.TASK_SET_FULL}


class InjectionError(ValueError):
    """An injection that cannot be made: the message is one line for the user."""


@dataclass
class HeldResult(ScsiResult):
    """An answer the transport holds back `hold_s` seconds, or (None) never sends."""

    hold_s: float | None = None


def block_range(cdb: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(first LBA, blocks) of a command that addresses blocks, else None."""
    op = cdb[0] if cdb else -1
    if op not in BLOCK_OPS:
        return None
    try:
        if op in (Op.READ_6, Op.WRITE_6):
            return Rw6.lba(cdb), Rw6.length(cdb) or 256
        group = op >> 5
        layout = Block10 if group == 1 else Block12 if group == 5 else Block16
        return layout.lba(cdb), layout.length(cdb)
    except (IndexError, ValueError, struct.error):  # a CDB too short: the unit answers it
        return None


def parse_op(text: str) -> str | int:
    """READ, WRITE, ANY (lower-cased) or an opcode 0xNN."""
    word = text.strip().lower()
    if word in OP_CLASSES:
        return word
    if re.fullmatch(r"0x[0-9a-f]{1,2}", word):
        return int(word, 16)
    raise InjectionError(f"OP={text} is not READ, WRITE, ANY or an opcode 0x00..0xFF")


def parse_sense(text: str) -> tuple[int, int, int]:
    """k/asc/ascq in hex (3/11/0, 0x3/0x11/0x00): a sense key 1..F and ASC, ASCQ 00..FF."""
    parts = text.strip().split("/")
    try:
        key, asc, ascq = (int(p.lower().removeprefix("0x"), 16) for p in parts)
    except ValueError:
        raise InjectionError(f"SENSE={text} is not k/asc/ascq in hex (e.g. 3/11/0)") from None
    if not (1 <= key <= 0xF and 0 <= asc <= 0xFF and 0 <= ascq <= 0xFF):
        raise InjectionError(f"SENSE={text}: the key is 1..F, ASC and ASCQ 00..FF")
    return key, asc, ascq


@dataclass
class Injection:
    id: int
    lun: int
    op: str | int  # "read", "write", "any" or an opcode
    error: ErrorKind
    lba: tuple[int, int] | None = None  # first and last block, inclusive
    remaining: int | None = 1  # None: ALWAYS
    initiator: str | None = None  # the initiator's name (IQN), lower case
    port: int | None = None
    sense: tuple[int, int, int] | None = None  # SENSE=
    delay_ms: float | None = None  # DELAY=
    fired: int = 0
    ops: frozenset[int] | None = field(default=None, repr=False)  # the opcodes matched (None: any)
    told_at: float | None = field(default=None, repr=False)
    untold: int = field(default=0, repr=False)

    @property
    def live(self) -> bool:
        return self.remaining is None or self.remaining > 0

    @property
    def op_name(self) -> str:
        return f"0x{self.op:02X}" if isinstance(self.op, int) else self.op.upper()

    @property
    def error_name(self) -> str:
        if self.error is ErrorKind.SENSE and self.sense is not None:
            return "SENSE={:X}/{:02X}/{:02X}".format(*self.sense)
        if self.error is ErrorKind.DELAY:
            return f"DELAY={self.delay_ms:g}ms"
        return self.error.value.upper()

    def row(self) -> dict[str, object]:
        return {
            "id": self.id, "unit": self.lun, "op": self.op_name,
            "lba_first": self.lba[0] if self.lba else None, "lba_last": self.lba[1] if self.lba else None,
            "remaining": self.remaining, "always": self.remaining is None,
            "initiator": self.initiator, "port": self.port, "error": self.error_name, "fired": self.fired,
        }

    def matches(self, req: ScsiRequest) -> tuple[bool, int | None]:
        """Whether `req` is hit, and the first LBA of the range hit (the sense's INFORMATION)."""
        if req.lun != self.lun or not self.live:
            return False, None
        op = req.cdb[0]
        if isinstance(self.op, int):
            if op != self.op:
                return False, None
        elif self.ops is not None and op not in self.ops:
            return False, None
        nexus = req.nexus
        if self.port is not None and nexus.port != self.port:
            return False, None
        if self.initiator is not None and nexus.initiator.split(",i,", 1)[0].lower() != self.initiator:
            return False, None
        blocks = block_range(req.cdb)
        if self.lba is None:
            return True, blocks[0] if blocks is not None else None
        if blocks is None or blocks[1] == 0:
            return False, None
        first, last = blocks[0], blocks[0] + blocks[1] - 1
        if last < self.lba[0] or first > self.lba[1]:
            return False, None
        return True, max(first, self.lba[0])


def firing_text(inj: Injection, req: ScsiRequest, times: int) -> str:
    """The INJECTION_FIRED event's message."""
    who = req.nexus.initiator.split(",i,", 1)[0]
    more = f" ({times} commands since the last notice)" if times > 1 else ""
    return (f"injection {inj.id} answered {op_name(req.cdb)} on unit {inj.lun} from {who} on port "
            f"{req.nexus.port} with {inj.error_name}{more}")


class Injections:
    """The injections of one target; `notify(injection, request, times)` hears of firings
    (rate-limited: the first, then at most once per TELL_EVERY_S with the count since the last)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.active = 0  # live injections: the target's one check per command
        self._all: dict[int, Injection] = {}
        self._next_id = 1
        self.notify: Callable[[Injection, ScsiRequest, int], object] | None = None

    def add(self, lun: int, op: str, error: str, *, lba_first: int | None = None, lba_last: int | None = None,
            count: int | None = 1, initiator: str | None = None, port: int | None = None,
            sense: str | None = None, delay_ms: float | None = None) -> Injection:
        """A new injection; `count` None fires always. InjectionError for a contradictory one."""
        if len(self._all) >= MAX_INJECTIONS:
            raise InjectionError(f"at most {MAX_INJECTIONS} injections (DELETE INJECTION some first)")
        try:
            kind = ErrorKind(error.lower())
        except ValueError:
            raise InjectionError(f"ERROR={error} not one of {', '.join(k.value.upper() for k in ErrorKind)}") from None
        parsed_op = parse_op(op)
        code = parse_sense(sense) if sense is not None else None
        if (kind is ErrorKind.SENSE) != (code is not None):
            raise InjectionError("ERROR=SENSE takes k/asc/ascq (SENSE=k/asc/ascq), and only it does")
        if (kind is ErrorKind.DELAY) != (delay_ms is not None):
            raise InjectionError("ERROR=DELAY takes a time in ms (DELAY=ms), and only it does")
        rng: tuple[int, int] | None = None
        if lba_first is not None or lba_last is not None:
            first = lba_first if lba_first is not None else lba_last
            last = lba_last if lba_last is not None else first
            assert first is not None and last is not None
            if last < first:
                raise InjectionError(f"LBA={first}-{last} runs backwards")
            rng = (first, last)
        if count is not None and count < 1:
            raise InjectionError(f"COUNT={count}: at least 1 (or ALWAYS)")
        inj = Injection(self._next_id, lun, parsed_op, kind, rng, count, initiator.lower() if initiator else None,
                        port, code, delay_ms)
        inj.ops = OP_CLASSES.get(parsed_op) if isinstance(parsed_op, str) else None
        self._next_id += 1
        self._all[inj.id] = inj
        self._recount()
        return inj

    def delete(self, ident: int) -> Injection:
        inj = self._all.pop(ident, None)
        if inj is None:
            have = ", ".join(map(str, self._all)) or "none"
            raise InjectionError(f"no injection {ident} (injections: {have})")
        self._recount()
        return inj

    def clear(self) -> int:
        n = len(self._all)
        self._all.clear()
        self._recount()
        return n

    def rows(self) -> list[dict[str, object]]:
        return [inj.row() for inj in self._all.values()]

    def _recount(self) -> None:
        self.active = sum(1 for inj in self._all.values() if inj.live)

    def answer(self, req: ScsiRequest, descriptor: bool, run: Callable[[], ScsiResult]) -> ScsiResult | None:
        """The answer of the first live injection `req` hits (`run` executes it, for DELAY), or None."""
        for inj in self._all.values():
            hit, info = inj.matches(req)
            if hit:
                return self._fire(inj, req, info, descriptor, run)
        return None

    def _fire(self, inj: Injection, req: ScsiRequest, info: int | None, descriptor: bool,
              run: Callable[[], ScsiResult]) -> ScsiResult:
        inj.fired += 1
        if inj.remaining is not None:
            inj.remaining -= 1
            if not inj.remaining:
                self._recount()
        self._tell(inj, req)
        kind = inj.error
        if kind in _STATUS:
            return ScsiResult(_STATUS[kind])
        if kind is ErrorKind.TIMEOUT:
            return HeldResult(Status.GOOD, hold_s=None)
        if kind is ErrorKind.DELAY:
            try:
                real = run()
                if isinstance(real, Stepped) and real.work is not None:  # a long command: all of it first
                    real = run_to_end(real.work)
            except ScsiError as failed:
                real = ScsiResult(Status.CHECK_CONDITION, b"", build_sense(failed, descriptor))
            return HeldResult(real.status, real.data, real.sense, hold_s=(inj.delay_ms or 0) / 1000.0)
        if kind is ErrorKind.SENSE:
            assert inj.sense is not None
            key, asc, ascq = inj.sense
        else:
            skey, code = _SENSE[kind]
            if kind is ErrorKind.MEDIUM and req.cdb[0] in WRITE_OPS:
                code = Asc.WRITE_ERROR
            key, asc, ascq = skey, code >> 8, code & 0xFF
        err = ScsiError(key, asc, ascq, info=info if kind is ErrorKind.MEDIUM else None)
        return ScsiResult(Status.CHECK_CONDITION, b"", build_sense(err, descriptor))

    def _tell(self, inj: Injection, req: ScsiRequest) -> None:
        inj.untold += 1
        if self.notify is None:
            return
        now = self.clock.now()
        if inj.told_at is not None and now - inj.told_at < TELL_EVERY_S:
            return
        times, inj.untold, inj.told_at = inj.untold, 0, now
        self.notify(inj, req, times)
