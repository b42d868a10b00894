"""The command language's vocabulary: the error, the reply, usage forms, and the word parsers.

Every module that adds commands (commands.py, and the rooms beside it) builds them from these,
so a disk name, a size, a unit number or a KEY=VALUE option reads the same in every command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from firmware_model import operations as ops

from .. import units


class CommandError(Exception):
    """A command that cannot run: the message is the one line the user sees."""


class Array(Protocol):
    """What the management layer needs from the emulator (the controller plus the process)."""

    def describe(self) -> dict[str, Any]: ...

    def disks(self) -> Sequence[Mapping[str, Any]]: ...

    def units(self) -> Sequence[Mapping[str, Any]]: ...

    def spares(self) -> Sequence[Mapping[str, Any]]: ...

    def events(self, since_id: int = 0) -> Sequence[Mapping[str, Any]]: ...

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a row of the operations registry (firmware_model.operations); raises CommandError with
        the registry's or the controller's one-line message.

        `op` is positional-only: operations take keyword arguments of any name (add_unit's name=).
        """
        ...


class NoViews:
    """An Array with empty views, for what only checks or records the operations a command sends
    (a scenario file's check, the tests' stand-ins); a subclass gives `operate`."""

    def describe(self) -> dict[str, Any]:
        return {}

    def disks(self) -> list[dict[str, Any]]:
        return []

    def units(self) -> list[dict[str, Any]]:
        return []

    def spares(self) -> list[dict[str, Any]]:
        return []

    def events(self, since_id: int = 0) -> list[dict[str, Any]]:
        return []


@dataclass
class Reply:
    result: Any
    text: str


@dataclass(frozen=True)
class Form:
    """One alternative of a command's usage, the registry row it runs, and its HELP summary."""

    usage: str
    op: str = ""
    summary: str = ""  # "": the row's own

    @property
    def text(self) -> str:
        return self.summary or ops.OPERATIONS[self.op].summary


@dataclass(frozen=True)
class Command:
    handler: Callable[[Array, list[str]], Reply]  # the words after the command's key words
    forms: tuple[Form, ...]

    @property
    def usage(self) -> str:
        return " | ".join(f.usage for f in self.forms)


# -- what a log may show of a command line --------------------------------------------------
SECRET_OPTIONS = ("COMMUNITY",)  # KEY=VALUE options whose value is a secret (SET ALERTS COMMUNITY=...)
_SECRET = re.compile(r"\b(" + "|".join(SECRET_OPTIONS) + r")=(\"[^\"]*\"|'[^']*'|\S*)", re.IGNORECASE)


def redact(line: str) -> str:
    """The command line with every secret option's value masked: what logs and errors may show."""
    return _SECRET.sub(lambda m: f"{m.group(1)}=***", line)


# -- parsing helpers ------------------------------------------------------------------------
def options(words: list[str], allowed: set[str], usage: str) -> tuple[list[str], dict[str, str]]:
    """Split KEY=VALUE options (keys upper-cased) from positional words."""
    pos: list[str] = []
    opts: dict[str, str] = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            key = k.upper()
            if key not in allowed:
                raise CommandError(f"unknown option {k!r} (usage: {usage})")
            if key in opts:
                raise CommandError(f"option {key} given twice")
            opts[key] = v
        else:
            pos.append(w)
    return pos, opts


def limit(op: str, arg: str) -> ops.Limit[Any]:
    """The registry's range of one argument of one operation."""
    lim = ops.OPERATIONS[op].arg(arg).limit
    assert isinstance(lim, ops.Limit), (op, arg)
    return lim


def choices(op: str, arg: str) -> tuple[Any, ...]:
    return ops.OPERATIONS[op].arg(arg).choices


def number(text: str, what: str, limit: ops.Limit[int]) -> int:
    try:
        n = int(text)
    except ValueError:
        raise CommandError(f"{what} {text!r} is not a number") from None
    if n not in limit:
        raise CommandError(f"{what} {n} outside {limit}")
    return n


def one_of(text: str, what: str, choices: tuple[Any, ...]) -> int:
    """A number that must be one of `choices` (STRIPE_SIZE=64, RATIO=50...)."""
    try:
        n = int(text)
    except ValueError:
        raise CommandError(f"{what} {text!r} is not a number") from None
    if n not in choices:
        raise CommandError(f"{what}={n} not one of {words_of(choices, ', ')}")
    return n


def words_of(choices: tuple[Any, ...], sep: str = "|") -> str:
    """Choices as the language writes them: HIGH|MEDIUM|LOW, 0|25|50."""
    return sep.join(str(c).upper() for c in choices)


def parse_disk(word: str) -> int:
    m = re.fullmatch(r"DISK(\d+)", word.strip().upper())
    if not m:
        raise CommandError(f"{word!r} is not a disk name (DISK{ops.BAYS.lo} .. DISK{ops.BAYS.hi})")
    bay = int(m.group(1))
    if bay not in ops.BAYS:
        raise CommandError(f"{word} names bay {bay}; bays are {ops.BAYS.lo}-{ops.BAYS.hi}")
    return bay


def parse_disks(spec: str) -> list[int]:
    """DISK1-DISK3, DISK1,DISK5 or a mix."""
    bays: list[int] = []
    for part in re.split(r"[,\s]+", spec.strip()):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            first, last = parse_disk(a), parse_disk(b)
            if last < first:
                raise CommandError(f"disk range {part} runs backwards")
            bays.extend(range(first, last + 1))
        else:
            bays.append(parse_disk(part))
    if not bays:
        raise CommandError("no disks given")
    if len(set(bays)) != len(bays):
        raise CommandError(f"a disk is named twice in {spec!r}")
    return bays


def parse_size(text: str) -> int:
    """Bytes from 8GB, 512MiB, 1.5T ... (binary units: 8GB is 8 GiB); a bare number is MiB, as the
    MSA CLI counted (the TOML's bare number is bytes). The grammar is units.parse_size's."""
    try:
        return units.parse_size(text, default_unit="M")
    except units.SizeError as exc:
        raise CommandError(str(exc)) from None


def unit_number(words: list[str], usage: str) -> tuple[int, list[str]]:
    if not words:
        raise CommandError(f"unit number missing (usage: {usage})")
    return number(words[0], "unit", ops.LUNS), words[1:]
