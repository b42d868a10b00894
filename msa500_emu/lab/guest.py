"""The RSO lab's guest: build the image, install it on a logical drive, QEMU command lines.

`scripts/lab/build-guest` does the building (Debian packages -> vmlinuz, initramfs.cpio.gz,
rootfs.ext4, cached); this module runs it and knows the command line that works with the emulator:

    image = build()                                          # or build(cache_dir), cached
    install(image, "iscsi://127.0.0.1:3260/IQN/1")           # the OS image onto LUN 1
    argv = qemu_argv(image, "primary", "primary", ctl_url=".../IQN/0", lun_url=".../IQN/1",
                     initiator_name="iqn.2026-11.lab:primary", hostfwd_port=5555,
                     qmp_socket=Path("primary.qmp"), serial_log=Path("primary.log"))

The guest prints @@ markers on its serial console (see MARKERS and docs/lab-guest.md); the
key-value service answers on guest port 7000 (`kv_request`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..iscsi.url import IscsiUrl

SERVICE_PORT = 7000  # the key-value service inside the guest
GUEST_ADDR = "10.0.2.15"  # QEMU user networking: the same address in every VM
INSTALLER_INITIATOR = "iqn.2026-11.lab:installer"
ROLES = ("primary", "recovery")

# Console markers, in boot order (each line starts with one of these).
MARKERS = {
    "initramfs": "@@INITRAMFS role=",  # the initramfs started
    "controller": "@@CONTROLLER dev=",  # the array controller's /dev/sgN (sg_inq output follows)
    "monitor_start": "@@MONITOR start",  # recovery: the pre-boot monitor runs
    "monitor_exit": "@@MONITOR exit=",  # recovery: its exit code (0: primary fenced, boot)
    "root_waiting": "@@ROOT waiting",  # the logical drive is not reachable through this port
    "fsck": "@@FSCK exit=",  # e2fsck -p of the root file system: its exit code
    "root": "@@ROOT mounted",  # the root file system is mounted; switch_root follows
    "init": "@@INIT ready",  # /sbin/init on the root file system is up
    "agent": "@@AGENT primary started",  # primary: the heartbeat agent runs
    "agent_exit": "@@AGENT exit=",  # primary: the agent ended (3: fenced, 5: storage power loss)
    "service": "@@SERVICE up port=7000",  # the key-value service listens
}


class GuestError(RuntimeError):
    """Building or installing the guest failed."""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    rootfs: Path
    key: str  # the builder's cache key (sha256 of its inputs)
    cache_dir: Path

    @classmethod
    def load(cls, cache_dir: Path | str | None = None) -> GuestImage:
        """The image already in a cache directory (no build); GuestError if incomplete."""
        d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        image = cls(d / "vmlinuz", d / "initramfs.cpio.gz", d / "rootfs.ext4",
                    _read(d / "KEY"), d)
        missing = [p.name for p in (image.kernel, image.initrd, image.rootfs) if not p.is_file()]
        if missing or not image.key:
            raise GuestError(f"no complete guest image in {d} (missing: {', '.join(missing) or 'KEY'}); "
                             f"run scripts/lab/build-guest --out {d}")
        return image


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def builder_path() -> Path:
    return repo_root() / "scripts" / "lab" / "build-guest"


def default_cache_dir() -> Path:
    env = os.environ.get("MSA500_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "msa500-emu" / "lab"


def build(cache_dir: Path | str | None = None, *, force: bool = False, agents_dir: Path | str | None = None,
          quiet: bool = True, timeout: float = 1800) -> GuestImage:
    """Run scripts/lab/build-guest (a no-op apart from "cached" when its inputs did not change)."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    argv = [str(builder_path()), "--out", str(d)]
    if force:
        argv.append("--force")
    if agents_dir is not None:
        argv += ["--agents-dir", str(agents_dir)]
    if quiet:
        argv.append("--quiet")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise GuestError(f"build-guest failed (exit {proc.returncode}):\n{tail}")
    return GuestImage.load(d)


def install(image: GuestImage, url: str, *, initiator_name: str = INSTALLER_INITIATOR,
            timeout: float = 600) -> float:
    """Write the image's root file system onto a logical drive (the whole image, through qemu-img);
    returns the seconds it took. The port must be active for that LUN (RSO off, or port 1/2 active)."""
    u = IscsiUrl.parse(url)
    if u.lun == 0:
        raise GuestError("LUN 0 is the array controller, not a logical drive")
    opts = (f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={u.portal},file.target={u.target},"
            f"file.lun={u.lun},file.initiator-name={initiator_name}")
    t0 = time.monotonic()
    proc = subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-t", "none", "-T", "none",
                           "--target-image-opts", str(image.rootfs), opts],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise GuestError(f"installing onto {url} failed: {(proc.stderr or proc.stdout).strip()}")
    return time.monotonic() - t0


def _opt(value: str | Path) -> str:
    """A value inside a QEMU -opt list: commas are doubled."""
    return str(value).replace(",", ",,")


def qemu_argv(image: GuestImage, role: str, name: str, ctl_url: str, lun_url: str, initiator_name: str,
              hostfwd_port: int | None, qmp_socket: Path | str, serial_log: Path | str, *,
              ctl_initiator_name: str | None = None, hostfwd_host: str = "127.0.0.1", memory_mb: int = 256,
              interval: float | None = None, extra_append: Iterable[str] = (), attach_lun: bool | None = None,
              qemu: str = "qemu-system-x86_64") -> list[str]:
    """The QEMU command line of one lab host (TCG only; never KVM).

    ctl_url: the array controller, LUN 0 (iscsi://HOST:PORT/IQN/0), passed through as
    scsi-generic (every CDB reaches the array: the RSO vendor commands, INQUIRY, ...); the guest
    sees /dev/sg0 with peripheral type 0x0C. lun_url: the logical drive the guest boots from
    (iscsi://HOST:PORT/IQN/1), scsi-block (CDBs passed through too; /dev/sda + /dev/sg1).
    Each drive is its own iSCSI session (libiscsi context). The controller's uses
    ctl_initiator_name (default initiator_name + "-ctl"): not required (libiscsi draws a random
    ISID per context, so two sessions with one name coexist, no reinstatement), but the array's
    log and session list then tell the heartbeat path from the disk path.
    attach_lun: attach the logical drive at start (default: the primary yes, the recovery no).
    QEMU refuses to start when a LUN answers NOT READY at open (its TEST UNIT READY), which is
    what a standby (RSO enabled) or fenced port does. So the recovery starts with the
    controller only; when its console says @@MONITOR exit=0 (the primary is fenced, port 2 is
    active), hot-plug the drive with `lun_hotplug_qmp(...)`; the initramfs waits for it.
    hostfwd_port: 127.0.0.1:PORT -> guest port 7000 (None: no forward; add one later over QMP
    with `hostfwd_add n0 tcp:127.0.0.1:PORT-:7000`). interval: the agents' --interval.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    ctl, lun = IscsiUrl.parse(ctl_url), IscsiUrl.parse(lun_url)
    if ctl.lun != 0:
        raise ValueError(f"ctl_url must address LUN 0 (the array controller), not LUN {ctl.lun}")
    if lun.lun == 0:
        raise ValueError("lun_url must address a logical drive (LUN 1 and up)")
    ctl_initiator = ctl_initiator_name or f"{initiator_name}-ctl"
    append = ["console=ttyS0", "panic=-1", "loglevel=4", f"msa500.role={role}", f"msa500.host={name}"]
    if interval is not None:
        append.append(f"msa500.interval={interval:g}")
    append += list(extra_append)
    if attach_lun is None:
        attach_lun = role == "primary"
    netdev = "user,id=n0,restrict=on"
    if hostfwd_port is not None:
        netdev += f",hostfwd=tcp:{hostfwd_host}:{hostfwd_port}-:{SERVICE_PORT}"
    disk = [
        "-drive", f"if=none,id=lun{lun.lun},format=raw,cache=none,file={_opt(str(lun))},"
                  f"file.initiator-name={_opt(initiator_name)}",
        "-device", f"scsi-block,drive=lun{lun.lun},bus=scsi0.0,channel=0,scsi-id=0,lun=1,id=disk{lun.lun}",
    ] if attach_lun else []
    return [
        qemu, "-name", name,
        "-accel", "tcg", "-M", "q35", "-bios", "/usr/share/qemu/qboot.rom", "-cpu", "max", "-smp", "1",
        "-m", str(memory_mb), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=ser0,path={_opt(serial_log)}", "-serial", "chardev:ser0",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", " ".join(append),
        "-device", "virtio-scsi-pci,id=scsi0",
        "-drive", f"if=none,id=ctl,format=raw,file={_opt(str(ctl))},file.initiator-name={_opt(ctl_initiator)}",
        "-device", "scsi-generic,drive=ctl,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
        *disk,
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
        "-qmp", f"unix:{_opt(qmp_socket)},server=on,wait=off",
    ]


def lun_hotplug_qmp(lun_url: str, initiator_name: str) -> list[dict[str, object]]:
    """QMP commands (in order) that attach the logical drive to a running lab VM exactly as
    qemu_argv(attach_lun=True) would have: send each with `execute`, check each has no error."""
    lun = IscsiUrl.parse(lun_url)
    if lun.lun == 0:
        raise ValueError("lun_url must address a logical drive (LUN 1 and up)")
    node = f"lun{lun.lun}"
    return [
        {"execute": "blockdev-add", "arguments": {
            "driver": "raw", "node-name": node, "cache": {"direct": True, "no-flush": False},
            "file": {"driver": "iscsi", "transport": "tcp", "portal": lun.portal, "target": lun.target,
                     "lun": lun.lun, "initiator-name": initiator_name}}},
        {"execute": "device_add", "arguments": {
            "driver": "scsi-block", "drive": node, "bus": "scsi0.0", "channel": 0, "scsi-id": 0, "lun": 1,
            "id": f"disk{lun.lun}"}},
    ]


def wait_for_marker(serial_log: Path | str, marker: str, timeout: float, *, start: int = 0,
                    proc: subprocess.Popen[bytes] | None = None) -> tuple[str, int]:
    """Wait until a console line starting with `marker` appears at or after byte offset `start`.

    Returns (the line, the offset just past it). TimeoutError after `timeout` seconds;
    GuestError if `proc` (the QEMU process) exits first.
    """
    deadline = time.monotonic() + timeout
    path = Path(serial_log)
    while True:
        try:
            data = path.read_bytes()[start:]
        except FileNotFoundError:
            data = b""
        offset = start
        for raw in data.split(b"\n")[:-1]:  # complete lines only
            offset += len(raw) + 1
            text = raw.decode("utf-8", "replace").rstrip("\r")
            if text.startswith(marker):
                return text, offset
        if proc is not None and proc.poll() is not None:
            raise GuestError(f"QEMU exited ({proc.returncode}) before {marker!r} appeared in {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker!r} did not appear in {path} within {timeout:g} s")
        time.sleep(0.1)


def kv_request(port: int, lines: Sequence[str] | str, *, host: str = "127.0.0.1", timeout: float = 10) -> list[str]:
    """Send request lines to the key-value service (through the VM's host forward); one answer each.

    Raises ConnectionError when the connection closes without an answer (QEMU's user networking
    accepts a connection even when nothing listens in the guest).
    """
    if isinstance(lines, str):
        lines = [lines]
    answers: list[str] = []
    with socket.create_connection((host, port), timeout=timeout) as s, s.makefile("rwb") as f:
        for line in lines:
            f.write(line.encode() + b"\n")
            f.flush()
            reply = f.readline()
            if not reply:
                raise ConnectionError(f"no answer from 127.0.0.1:{port} to {line!r}")
            answers.append(reply.decode().rstrip("\r\n"))
    return answers
