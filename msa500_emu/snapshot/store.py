"""Snapshots on disk: <state_dir>/snapshots/<name>/, the shelf's files and a manifest.

A snapshot is written under a temporary name and renamed into place once its manifest is
written, so a crash never leaves a half snapshot that RESTORE would take. The automatic
snapshot taken at start (what RESET goes back to) is `snapshots/.start`: a name the
validation refuses, so no command can take, overwrite or delete it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware_model.operations import SNAPSHOT_NAME_MAX

from .files import Copied, copy_file, is_shelf_file, shelf_files

SNAPSHOTS_DIR = "snapshots"
MANIFEST = "manifest.json"
FORMAT = 1
START = ".start"  # the automatic snapshot of the state right after start
NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{SNAPSHOT_NAME_MAX - 1}}}")
NAME_RULE = f"1-{SNAPSHOT_NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter or digit"


class SnapshotError(Exception):
    """A snapshot operation refused or failed: one line naming the snapshot and the problem."""


@dataclass
class Manifest:
    name: str
    taken: float  # wall clock, seconds since the epoch
    serial: str
    files: list[Copied] = field(default_factory=list)
    format: int = FORMAT

    @property
    def stored(self) -> int:
        return sum(f.stored for f in self.files)

    def row(self) -> dict[str, Any]:
        """What SNAPSHOT LIST and the API show of it."""
        return {"name": self.name, "taken": self.taken, "serial": self.serial, "files": len(self.files),
                "size_bytes": sum(f.size for f in self.files), "stored_bytes": self.stored,
                "method": "reflink" if any(f.method == "reflink" for f in self.files) else "sparse"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        files = [Copied(str(f["name"]), int(f["size"]), int(f["stored"]), str(f["method"])) for f in raw["files"]]
        return cls(str(raw["name"]), float(raw["taken"]), str(raw["serial"]), files, int(raw["format"]))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SnapshotError(f"snapshot name {name!r}: {NAME_RULE}")
    return name


class SnapshotStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / SNAPSHOTS_DIR

    def path(self, name: str) -> Path:
        return self.root / name

    def sweep(self) -> None:
        """Remove what an interrupted SAVE left (temporary directories)."""
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-"):
                    shutil.rmtree(p, ignore_errors=True)

    def manifest(self, name: str) -> Manifest:
        """The manifest of snapshot `name`; SnapshotError when there is none."""
        path = self.path(name) / MANIFEST
        try:
            return Manifest.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            if name == START:
                raise SnapshotError("there is no snapshot of the state at start (see the log: it could not be "
                                    "taken)") from None
            have = ", ".join(m.name for m in self.list()) or "none"
            raise SnapshotError(f"no snapshot {name!r} (snapshots: {have})") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"snapshot {name!r}: unreadable manifest {path}: {exc}") from None

    def list(self) -> list[Manifest]:
        """The named snapshots, oldest first (not the automatic one at start)."""
        out: list[Manifest] = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if NAME.fullmatch(p.name) and (p / MANIFEST).is_file():
                    try:
                        out.append(self.manifest(p.name))
                    except SnapshotError:
                        continue  # a damaged one is not listed; RESTORE names the problem
        return sorted(out, key=lambda m: (m.taken, m.name))

    def save(self, name: str, serial: str, *, replace: bool = False) -> Manifest:
        """Copy the shelf's files now; the caller makes sure nothing changes them meanwhile."""
        final = self.path(name)
        if final.exists() and not replace:
            taken = self.manifest(name).taken
            raise SnapshotError(f"snapshot {name!r} exists (taken {_when(taken)}): SAVE does not overwrite; "
                                f"SNAPSHOT DELETE {name} first, or pick another name")
        self.root.mkdir(exist_ok=True)
        tmp = self.root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            man = Manifest(name, round(time.time(), 3), serial)
            for src in shelf_files(self.state_dir):
                man.files.append(copy_file(src, tmp / src.name))
            (tmp / MANIFEST).write_text(json.dumps(man.to_dict(), indent=1) + "\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SnapshotError(f"snapshot {name!r} not taken: {exc.strerror or exc}"
                                + (f" ({exc.filename})" if exc.filename else "")) from None
        return man

    def delete(self, name: str) -> Manifest:
        man = self.manifest(name)
        shutil.rmtree(self.path(name))
        return man

    def put_back(self, man: Manifest) -> None:
        """Make the state directory hold exactly the snapshot's shelf files (the controller is closed).

        Every shelf file goes first (a drive pulled since, reservations made since), then the
        snapshot's are copied in. Not a rename over the old file: ext4 then writes the new file
        out at once (auto_da_alloc), seconds for a shelf with data. A crash half way leaves the
        directory incomplete, not wrong: RESTORE again.
        """
        src_dir = self.path(man.name)
        for f in man.files:
            if not is_shelf_file(f.name) or not (src_dir / f.name).is_file():
                raise SnapshotError(f"snapshot {man.name!r} is incomplete or damaged: {f.name}")
        for p in shelf_files(self.state_dir):
            p.unlink()
        for f in man.files:
            copy_file(src_dir / f.name, self.state_dir / f.name)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
