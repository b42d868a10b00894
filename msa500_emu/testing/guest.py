"""Linux guests for tests that need a kernel block device: a QEMU VM (TCG, never KVM) that logs in
to chosen array ports with the kernel initiator (open-iscsi), optionally runs multipathd, and runs
a shell script; the disk appears as /dev/sdX (or /dev/mapper/mpathX).

    image = build()                                    # scripts/lab/build-cluster-guest, cached
    result = run_in_guest(array, "dd if=/dev/zero of=$DISK bs=4k count=1 oflag=direct", ports=(1,))
    assert result.status == 0, result.output

For longer plays, `Guest` starts one VM and lets the host wait for the script's `@@` markers
(`mark NAME` in the script) and answer it on a second serial line (`host_wait WORD` in the
script, `guest.send("WORD")` on the host). See docs/cluster-lab.md.

The guest reaches array port N at 10.0.2.10N:3260 inside QEMU (user networking with
restrict=on; a guestfwd runs guest_link.py, a forwarder to 127.0.0.1:PORT, per connection), so
nothing listens beyond what the array already does.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Kernel arguments that save ~2.5 s of each TCG boot (no Spectre mitigations, no crypto self-tests,
# no EDD probe, no timer check, no KASLR): a throwaway test VM needs none of them.
FAST_BOOT = ("mitigations=off", "edd=off", "cryptomgr.notests", "no_timer_check", "random.trust_cpu=on", "nokaslr")
DEFAULT_MEMORY_MB = 512  # the whole OS lives in the initramfs (~100 MiB unpacked)
READY = "@@READY"
JOB_START = "@@JOB start"
JOB_EXIT = "@@JOB exit="
POWEROFF = "@@POWEROFF"
LINK = Path(__file__).with_name("guest_link.py")  # run per guest connection by guestfwd


class GuestError(RuntimeError):
    """Building or running a guest failed."""


class ArrayLike(Protocol):
    """What a guest needs of an array (an `MSA500` handle has it)."""

    target: str

    def tcp_port(self, port: int) -> int: ...


@dataclass(frozen=True)
class ClusterImage:
    kernel: Path
    initrd: Path
    key: str
    cache_dir: Path

    @classmethod
    def load(cls, cache_dir: Path | str | None = None) -> ClusterImage:
        """The image already in a cache directory (no build); GuestError if incomplete."""
        d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = (d / "KEY").read_text().strip() if (d / "KEY").is_file() else ""
        image = cls(d / "vmlinuz", d / "initramfs.cpio.zst", key, d)
        if not (image.kernel.is_file() and image.initrd.is_file() and key):
            raise GuestError(f"no complete cluster guest image in {d}; run scripts/lab/build-cluster-guest --out {d}")
        return image


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def builder_path() -> Path:
    return repo_root() / "scripts" / "lab" / "build-cluster-guest"


def default_cache_dir() -> Path:
    env = os.environ.get("MSA500_CLUSTER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "msa500-emu" / "cluster-guest"


def build(cache_dir: Path | str | None = None, *, force: bool = False, timeout: float = 1800) -> ClusterImage:
    """Run scripts/lab/build-cluster-guest (only "cached" when its inputs did not change)."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    argv = [str(builder_path()), "--out", str(d), "--quiet"] + (["--force"] if force else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise GuestError(f"build-cluster-guest failed (exit {proc.returncode}):\n{tail}")
    return ClusterImage.load(d)


def _cpio_newc(files: dict[str, bytes]) -> bytes:
    """A newc cpio archive of regular files (and their directories), as the kernel unpacks it."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
        ino += 1

    dirs = sorted({str(Path(n).parent) for n in files if str(Path(n).parent) != "."})
    for d in dirs:
        entry(d, 0o40755, b"")
    for name, data in sorted(files.items()):
        entry(name, 0o100755, data)
    entry("TRAILER!!!", 0, b"")
    return bytes(out)


def _opt(value: object) -> str:
    """A value inside a QEMU option list: commas doubled."""
    return str(value).replace(",", ",,")


@dataclass
class GuestResult:
    status: int | None  # the script's exit status; None: it never finished (reset, killed, timeout)
    output: str  # console lines between @@JOB start and @@JOB exit=
    console: str  # the whole serial console
    returncode: int | None  # QEMU's exit status (None: still running when given up, then killed)
    powered_off: bool  # the guest powered itself off after the script (False: reset/crash/killed)


class Guest:
    """One QEMU guest logged in to `ports` of `array` with initiator name `initiator`."""

    def __init__(self, image: ClusterImage, array: ArrayLike, workdir: Path | str, *, name: str = "guest",
                 script: str | None = None, ports: Sequence[int] = (1,), initiator: str | None = None,
                 multipath: bool = False, memory_mb: int = DEFAULT_MEMORY_MB, replacement_timeout: int = 5,
                 noop: int = 2, extra_append: Iterable[str] = (), host: str = "127.0.0.1") -> None:
        self.image, self.array, self.name = image, array, name
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.script = script
        self.ports = tuple(ports)
        self.initiator = initiator or f"iqn.2026-11.lab:{name}"
        self.multipath = multipath
        self.memory_mb = memory_mb
        self.append = ["console=ttyS0", "panic=-1", "loglevel=4", *FAST_BOOT, f"msa500.host={name}",
                       f"msa500.iqn={self.initiator}", f"msa500.target={array.target}",
                       f"msa500.ports={','.join(str(p) for p in self.ports)}",
                       f"msa500.multipath={int(multipath)}", f"msa500.repl={replacement_timeout}",
                       f"msa500.noop={noop}", *extra_append]
        self.host = host
        self.console_log = self.dir / f"{name}.console"
        self.host_socket = self.dir / f"{name}.host"
        if len(str(self.host_socket)) > 100:  # a unix socket path has at most 107 bytes
            self.host_socket = Path(tempfile.mkdtemp(prefix="msa500-guest-")) / "host"
        self.proc: subprocess.Popen[bytes] | None = None
        self._chan: socket.socket | None = None
        self._offset = 0
        self.started_at = 0.0

    def argv(self) -> list[str]:
        """The QEMU command line (TCG only)."""
        # slirp connects the command's stdin, stdout *and stderr* to the guest's socket: nothing
        # may reach the guest on stderr. guest_link.py waits for a port that is DOWN (see there why).
        fwd = ",".join(f"guestfwd=tcp:10.0.2.10{p}:3260-cmd:/bin/sh -c "
                       f"'exec {sys.executable} -I -S {LINK} {self.host} {self.array.tcp_port(p)} 2>/dev/null'"
                       for p in self.ports)
        return [
            "qemu-system-x86_64", "-name", self.name, "-accel", "tcg", "-M", "q35",
            "-bios", "/usr/share/qemu/qboot.rom", "-cpu", "max", "-smp", "1", "-m", str(self.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=ser0,path={_opt(self.console_log)}", "-serial", "chardev:ser0",
            "-chardev", f"socket,id=ser1,path={_opt(self.host_socket)},server=on,wait=off", "-serial", "chardev:ser1",
            "-kernel", str(self.image.kernel), "-initrd", str(self._initrd()), "-append", " ".join(self.append),
            "-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0",
        ]

    def _initrd(self) -> Path:
        """The image's initramfs with /job/script appended (the kernel unpacks concatenated archives)."""
        path = self.dir / f"{self.name}.initrd"
        with open(path, "wb") as out, open(self.image.initrd, "rb") as base:
            shutil.copyfileobj(base, out)
            if self.script is not None:
                out.write(gzip.compress(_cpio_newc({"job/script": self.script.encode()})))
        return path

    def start(self, *, new_session: bool = False) -> Guest:
        """Start QEMU (new_session: in its own session, to outlive this process, as the lab does)."""
        self.console_log.write_bytes(b"")
        self.host_socket.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        with open(self.dir / f"{self.name}.qemu.log", "wb") as err:  # QEMU keeps its own copy of the fd
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=new_session)
        return self

    @property
    def console(self) -> str:
        try:
            return self.console_log.read_bytes().decode("utf-8", "replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_marker(self, marker: str, timeout: float = 120, *, from_start: bool = False) -> str:
        """The next console line (after the last one waited for) that starts with `marker`."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.console_log.read_bytes() if self.console_log.exists() else b""
            pos = 0 if from_start else self._offset
            for raw in data[pos:].split(b"\n")[:-1]:
                pos += len(raw) + 1
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.startswith(marker):
                    self._offset = pos
                    return line
            if not self.running:
                raise GuestError(f"{self.name}: QEMU exited ({self.returncode}) before {marker!r}; "
                                 f"console {self.console_log}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {marker!r} did not appear within {timeout:g} s; "
                                   f"console {self.console_log}:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.console.splitlines()[-lines:])

    def send(self, word: str, timeout: float = 10) -> None:
        """A line to the script's `host_wait` (the guest's second serial port)."""
        if self._chan is None:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(str(self.host_socket))
                    self._chan = s
                    break
                except OSError:
                    s.close()
                    if time.monotonic() > deadline:
                        raise GuestError(f"{self.name}: no host channel at {self.host_socket}") from None
                    time.sleep(0.1)
        self._chan.sendall(word.encode() + b"\n")

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout: float = 120) -> GuestResult:
        """Wait for QEMU to exit (the guest powers off after its script, or resets); killed after timeout."""
        assert self.proc is not None, "start() first"
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.result()

    def result(self) -> GuestResult:
        console = self.console
        status: int | None = None
        output: list[str] = []
        inside = False
        for line in console.splitlines():
            if line.startswith(JOB_START):
                inside, output = True, []
            elif line.startswith(JOB_EXIT):
                inside = False
                status = int(line[len(JOB_EXIT):].split()[0])
            elif inside:
                output.append(line)
        return GuestResult(status, "\n".join(output), console, self.returncode,
                           powered_off=POWEROFF in console and self.returncode == 0)

    def kill(self) -> None:
        """SIGKILL QEMU (by its PID) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._chan is not None:
            self._chan.close()
            self._chan = None

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_in_guest(array: ArrayLike, script: str, *, ports: Sequence[int] = (1,), initiator: str | None = None,
                 multipath: bool = False, timeout: float = 240, image: ClusterImage | None = None,
                 workdir: Path | str | None = None, name: str = "guest") -> GuestResult:
    """Boot a guest logged in to `ports`, run `script` (sh; $DISK is LUN 1's /dev/sdX, $MPATH the
    multipath map), wait for it to power off; the result has its exit status and output."""
    image = image or build()
    workdir = Path(workdir) if workdir is not None else Path(os.environ.get("TMPDIR", "/tmp")) / f"msa500-{name}"
    with Guest(image, array, workdir, name=name, script=script, ports=ports, initiator=initiator,
               multipath=multipath) as g:
        return g.wait_exit(timeout)


def guest_unavailable() -> str | None:
    """Why guests cannot run here (None: they can): root for the build, QEMU for the boot."""
    if os.geteuid() != 0:
        return "the cluster guest is built as root (apt-get download, chroot, device nodes)"
    if shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None:
        return "no qemu-system-x86_64 and no apt-get to install it"
    return None


class GuestFactory:
    """The `msa500_guest` fixture: call it like run_in_guest (one guest, its result), or `start()`
    guests for a longer play; every guest still running is killed at teardown."""

    def __init__(self, image: ClusterImage, base: Path) -> None:
        self.image = image
        self.base = base
        self.guests: list[Guest] = []

    def start(self, array: ArrayLike, script: str | None = None, *, name: str | None = None,
              ports: Sequence[int] = (1,), initiator: str | None = None, multipath: bool = False,
              **kwargs: object) -> Guest:
        """Boot a guest (it runs `script` once logged in and set up); returns at once."""
        name = name or f"guest{len(self.guests) + 1}"
        g = Guest(self.image, array, self.base / name, name=name, script=script, ports=ports,
                  initiator=initiator, multipath=multipath, **kwargs)  # type: ignore[arg-type]
        self.guests.append(g)
        return g.start()

    def __call__(self, array: ArrayLike, script: str, *, ports: Sequence[int] = (1,), initiator: str | None = None,
                 multipath: bool = False, timeout: float = 240, name: str | None = None) -> GuestResult:
        """Boot a guest, run `script`, wait for it to power off: its exit status and output."""
        g = self.start(array, script, name=name, ports=ports, initiator=initiator, multipath=multipath)
        return g.wait_exit(timeout)

    def kill_all(self) -> None:
        for g in self.guests:
            g.kill()
