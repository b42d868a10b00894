"""The command language's usage notation turned into the commands it stands for.

The notation (msa500_emu/management/commands.py's docstring; the README's Management block uses
it too): ` | ` separates alternatives, and one that does not start with the command's first word
goes on from the first two words of the full alternative before it (`FAULT DISK4 FAIL | PULL`);
`A|B` inside a word is a choice of that word; `[...]` is optional; `...` repeats.

`expand(line)` gives every command a line stands for, in order, so that every alternative, every
choice and every optional part appears: round r takes choice r (modulo their number) of each word
with the optional parts in, and a last round leaves them out. Each round runs
the whole line from left to right, as a reader does: `FAULT SHELF POWER-OFF [DURATION=30] | FAULT
SHELF POWER-ON` is off-for-30-s, on, off, on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ALTERNATIVE = re.compile(r"\s+\|\s+")
TOKEN = re.compile(r"\[[^\]]*\]|\S+")
COLUMN = re.compile(r"\s{3,}")

#: fill(placeholder, option) -> a concrete word; option is the KEY of KEY=placeholder, else None.
Fill = Callable[[str, "str | None"], str]


def is_placeholder(word: str) -> bool:
    return any(c.islower() for c in word)


def alternatives(line: str) -> list[str]:
    """The full alternatives of one usage line."""
    parts = ALTERNATIVE.split(line.strip())
    verb = parts[0].split()[0].upper()
    out: list[str] = []
    base: list[str] = []
    for part in parts:
        words = part.split()
        if words[0].upper() == verb:
            out.append(part)
            base = words[:2]
        else:
            if not base:
                raise ValueError(f"{line!r}: {part!r} continues no command")
            out.append(" ".join([*base, part]))
    return out


def _word(word: str, choice: int, fill: Fill | None) -> str:
    key, eq, val = word.partition("=")
    if not eq:
        key, val = "", word
    quote = '"' if val.startswith('"') and val.endswith('"') and len(val) > 1 else ""
    if quote:
        val = val[1:-1]
    options = val.split("|")
    picked = options[choice % len(options)]
    if fill is not None and is_placeholder(picked):
        picked = fill(picked, key.upper() or None)
    return f"{key}{eq}{quote}{picked}{quote}"


def _rounds(alt: str) -> int:
    tokens = TOKEN.findall(alt)
    choices = max((len(w.partition("=")[2 if "=" in w else 0].split("|")) for t in tokens
                   for w in t.strip("[]").split()), default=1)
    return choices + (1 if any(t.startswith("[") for t in tokens) else 0)


def variant(alt: str, r: int, fill: Fill | None = None) -> str:
    """Round r of one alternative."""
    tokens = TOKEN.findall(alt)
    with_optional = any(t.startswith("[") for t in tokens)
    last = with_optional and r == _rounds(alt) - 1
    words: list[str] = []
    for t in tokens:
        optional = t.startswith("[")
        if optional and last:
            continue
        for w in (t[1:-1].split() if optional else [t]):
            if w != "...":
                words.append(_word(w, 0 if last else r, fill))
    return " ".join(words)


def expand(line: str, fill: Fill | None = None) -> list[str]:
    """Every command of one usage line (see the module docstring for the order)."""
    alts = alternatives(line)
    rounds = max(_rounds(a) for a in alts)
    return [variant(a, min(r, _rounds(a) - 1), fill) for r in range(rounds) for a in alts]


def columns(line: str) -> list[str]:
    """A docs line may hold several commands in columns (three spaces or more apart); a column in
    parentheses is a comment."""
    return [c for c in COLUMN.split(line.strip()) if c and not c.startswith("(")]
