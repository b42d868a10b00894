"""What a hostile run found (issue 10, item 7), against real `msa500-emu serve` processes.

Raw-socket clients on 127.0.0.1 only: huge WRITE headers without data, pipelined READs whose
answers are never read, two emulators on one state directory, NVRAM of the wrong shape, a
small file system that fills up. Each test checks bytes, counts, statuses and exit codes
(never elapsed time); every loop is bounded; each client socket has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from firmware_model.cache import CACHE_FILE
from firmware_model.sparse import punch_hole
from msa500_emu.iscsi.constants import Op
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.iscsi.pdu import PduReader
from msa500_emu.testing.array import PACKAGE_ROOT, RunningArray, mirror_shelf

from ..conftest import start_array

MIB = 1 << 20
LOOPBACK = "127.0.0.1"
SHELF = mirror_shelf(serial="HOSTILE001", drive_size="256MiB", size="64MiB")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for PID {pid}")


def session(arr: RunningArray, name: str) -> Initiator:
    ini = Initiator(LOOPBACK, arr.port1, InitiatorConfig(initiator_name=f"iqn.2026-11.lab:{name}"), timeout=30)
    ini.login(arr.target)
    ini.clear_unit_attentions(1)
    return ini


def command(ini: Initiator, itt: int, cdb: bytes, edtl: int, *, write: bool) -> bytes:
    """A SCSI Command PDU with no data, F set: nothing unsolicited follows."""
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD
    bhs[1] = 0x80 | (0x20 if write else 0x40) | 0x01
    bhs[8:16] = bytes([0, 1]) + bytes(6)
    struct.pack_into(">IIII", bhs, 16, itt, edtl, ini.cmd_sn, ini.exp_stat_sn)
    ini.cmd_sn += 1
    bhs[32:48] = cdb.ljust(16, b"\0")
    return bytes(bhs)


def probe(ini: Initiator, n: int = 20) -> int:
    """TEST UNIT READYs another session gets answered GOOD (each bounded by the socket timeout)."""
    return sum(1 for _ in range(n) if ini.test_unit_ready(1).status == 0)


def serve_cmd(state: Path, config: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(state), "--port1", f"{LOOPBACK}:0",
           "--port2", f"{LOOPBACK}:0", "--api", f"{LOOPBACK}:0"]
    return cmd + (["--config", str(config)] if config is not None else [])


def run_serve(state: Path, config: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A `serve` that is expected to refuse to start: its exit status and output."""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    return subprocess.run(serve_cmd(state, config), capture_output=True, text=True, timeout=timeout,
                          cwd=PACKAGE_ROOT, env=env, stdin=subprocess.DEVNULL)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@contextmanager
def small_fs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(fs: Path) -> int:
    """Take every free byte of the file system at `fs` (bounded by its size); returns bytes taken."""
    total = os.statvfs(fs).f_blocks * os.statvfs(fs).f_frsize
    chunk = b"\x5a" * MIB
    taken = 0
    with open(fs / "filler", "wb", buffering=0) as f:
        while taken <= total:
            try:
                taken += f.write(chunk)
            except OSError:
                break
        for _ in range(MIB // 4096):  # and the last partial MiB
            try:
                taken += f.write(chunk[:4096])
            except OSError:
                break
    return taken


# ------------------------------------------------------------------ 1: data-out limits
def test_huge_write_headers_are_refused_at_once_and_cost_no_memory(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "state", SHELF)
    try:
        assert arr.proc is not None
        other = session(arr, "bystander")
        bad = session(arr, "hostile")
        before = rss_bytes(arr.proc.pid)
        cdb = struct.pack(">BBQIBB", 0x8A, 0, 0, 0xFFFFFFFF, 0, 0)
        bad.send_raw(command(bad, 0x100, cdb, 0xFFFFFFFF, write=True)
                     + command(bad, 0x101, cdb, 0xFFFFFFFF, write=True))
        answers = [bad.recv_pdu() for _ in range(2)]
        assert probe(other) == 20
        grown = rss_bytes(arr.proc.pid) - before
        assert grown < 64 * MIB, f"RSS grew by {grown} bytes"
        for pdu in answers:
            assert pdu.opcode == Op.SCSI_RSP and pdu.bhs[3] == 0x02  # CHECK CONDITION, no R2T
            sense = bytes(pdu.data[2:])
            assert (sense[2] & 0xF, sense[12], sense[13]) == (0x5, 0x24, 0x00)
        assert bad.test_unit_ready(1).status == 0  # the session itself goes on
    finally:
        assert arr.stop() == 0, arr.log_tail()


# ------------------------------------------------------------------ 2: Data-In back-pressure
@pytest.mark.slow
def test_unread_read_replies_are_back_pressured(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "state", SHELF)
    try:
        assert arr.proc is not None
        other = session(arr, "bystander")
        bad = session(arr, "hostile")
        bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        before = rss_bytes(arr.proc.pid)
        blocks = 32 * MIB // 512
        cdb = struct.pack(">BBQIBB", 0x88, 0, 0, blocks, 0, 0)
        bad.send_raw(b"".join(command(bad, 0x200 + i, cdb, 32 * MIB, write=False) for i in range(60)))
        peak = before
        served = 0
        for _ in range(10):  # the emulator meanwhile: other sessions are answered, memory stays put
            served += probe(other, 10)
            peak = max(peak, rss_bytes(arr.proc.pid))
        assert served == 100
        assert peak - before < 256 * MIB, f"RSS grew by {peak - before} bytes for 60 x 32 MiB unread"
        # Once the initiator reads, the replies flow again: two whole READs arrive.
        reader = PduReader()
        done = 0
        for _ in range(200000):
            if done >= 2:
                break
            chunk = bad.sock.recv(1 << 20)
            assert chunk, "the target closed the connection"
            reader.feed(chunk)
            while (pdu := reader.next_pdu()) is not None:
                if pdu.opcode == Op.DATA_IN and pdu.flags & 0x01:
                    assert pdu.bhs[3] == 0
                    done += 1
        assert done >= 2
        bad.close()
        assert probe(other) == 20
    finally:
        assert arr.stop() == 0, arr.log_tail()


# ------------------------------------------------------------------ 3: the cache file's space
def test_cache_space_is_reserved_or_the_start_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "shelf.toml"
    cfg.write_text(SHELF)
    with small_fs(tmp_path / "small", "64m") as fs:  # less than the 128 MiB cache
        done = run_serve(fs / "state", cfg)
        assert done.returncode == 2, done.stderr
        err = lines(done.stderr)[-1]
        assert "Traceback" not in done.stderr
        assert str(fs / "state" / CACHE_FILE) in err and "MiB free" in err, err
    with small_fs(tmp_path / "roomy", "192m") as fs:
        arr = start_array(fs / "state", SHELF)
        assert arr.stop() == 0, arr.log_tail()
        cache = fs / "state" / CACHE_FILE
        assert os.stat(cache).st_blocks * 512 >= os.path.getsize(cache)  # no hole left to fault in
        with open(cache, "r+b") as f:  # as an older version left it: sparse
            punch_hole(f.fileno(), 64 * 1024, os.path.getsize(cache) - 64 * 1024)
        fill(fs)
        done = run_serve(fs / "state", cfg)
        assert done.returncode == 2, done.stderr  # not -7 (SIGBUS), neither now nor at the next try
        assert "Traceback" not in done.stderr
        assert str(cache) in lines(done.stderr)[-1] and "MiB free" in lines(done.stderr)[-1]


# ------------------------------------------------------------------ 4: one emulator per state dir
def test_a_second_emulator_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "state", SHELF)
    try:
        assert arr.proc is not None
        done = run_serve(tmp_path / "state")
        assert done.returncode == 2
        err = lines(done.stderr)
        assert len(err) == 1, done.stderr
        assert f"PID {arr.proc.pid}" in err[0] and str(tmp_path / "state") in err[0]
        assert arr.alive and probe(session(arr, "still-served")) == 20
    finally:
        assert arr.stop() == 0, arr.log_tail()
    arr = start_array(tmp_path / "state", SHELF)  # the lock went with its process
    assert arr.stop() == 0, arr.log_tail()


# ------------------------------------------------------------------ 5: NVRAM of the wrong shape
def _set(doc: dict, path: str, value: object) -> None:
    *head, last = path.split(".")
    node: object = doc
    for k in head:
        node = node[int(k)] if isinstance(node, list) else node[k]  # type: ignore[index]
    node[int(last) if isinstance(node, list) else last] = value  # type: ignore[index]


@pytest.fixture(scope="module")
def stopped_shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A shelf that ran once and stopped: its state directory and NVRAM text (restored after each test)."""
    state = tmp_path_factory.mktemp("nvram") / "state"
    arr = start_array(state, SHELF)
    assert arr.stop() == 0, arr.log_tail()
    yield state, (state / "controller-nvram.json").read_text()


@pytest.mark.parametrize(("key", "value"), [
    ("config.arrays.0.members", []),
    ("next_drive", None),
    ("config.lds.0.num_blocks", "64MiB"),
    ("config.arrays.0.home_bays", "1,2"),
    ("config.lds.0.array", "B"),
    ("enclosure.temperature_c", []),
    ("faults", [["bay", 1]]),
    ("battery.charge", "full"),
    ("rso", "on"),
])
def test_nvram_of_the_wrong_shape_is_one_line_and_exit_2(stopped_shelf: tuple[Path, str], key: str,
                                                          value: object) -> None:
    state, original = stopped_shelf
    nvram = state / "controller-nvram.json"
    doc = json.loads(original)
    _set(doc, key, value)
    nvram.write_text(json.dumps(doc))
    try:
        done = run_serve(state)
    finally:
        nvram.write_text(original)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    err = lines(done.stderr)
    assert len(err) == 1, done.stderr
    shown = key.replace(".0.", "[0].").replace(".0", "[0]")
    assert err[0].startswith("msa500-emu: configuration error: controller NVRAM") and str(nvram) in err[0]
    assert shown in err[0], err[0]


# ------------------------------------------------------------------ 6: the drive images' disk fills
FIRST = bytes(range(256)) * 2 * 256  # 128 KiB, written while there is space
LATER = [bytes([i + 1]) * 64 * 1024 for i in range(8)]  # written once the file system is full


@pytest.mark.slow
def test_a_full_file_system_blocks_destage_loses_nothing_and_says_so(tmp_path: Path) -> None:
    with small_fs(tmp_path / "small", "192m") as fs:
        state = fs / "state"
        arr = start_array(state, SHELF, log=tmp_path / "emu.log")
        try:
            _fill_then_stop(arr, fs, tmp_path / "emu.log")
        finally:
            if arr.alive:
                arr.kill()
        os.unlink(fs / "filler")  # space again: the next start writes the cache out
        arr = start_array(state, log=tmp_path / "emu2.log")
        try:
            codes = [e["code"] for e in arr.events()]
            assert "CACHE_REPLAYED" in codes and "CACHE_DATA_LOST" not in codes
            ini = session(arr, "reader")
            assert ini.read(1, 0, len(FIRST) // 512) == FIRST
            for i, data in enumerate(LATER):
                assert ini.read(1, 8192 + i * 128, 128) == data
            ini.close()
        finally:
            assert arr.stop() == 0, arr.log_tail()


def _fill_then_stop(arr: RunningArray, fs: Path, log_path: Path) -> None:
    """Write, fill the file system, write more (cached), check what is said, SIGTERM."""
    state = fs / "state"
    ini = session(arr, "writer")
    ini.write(1, 0, FIRST)
    taken = fill(fs)
    assert taken > 0 and os.statvfs(fs).f_bavail == 0
    since = arr.last_event_id()
    for i, data in enumerate(LATER):  # new blocks of the drive images: they need space
        ini.write(1, 8192 + i * 128, data)  # acknowledged from the battery-backed cache
    event = arr.wait_for_event("STORAGE_FULL", since=since, timeout=30)
    assert "destage blocked" in event["message"] and event["severity"] == "critical"
    cache = arr.describe()["cache"]
    assert cache["destage_blocked"] and cache["dirty_bytes"] >= 8 * 64 * 1024
    text = arr.ctl("SHOW", "GLOBALS", json=False)
    assert "BLOCKED" in str(text), text
    ini.close()
    assert arr.proc is not None
    arr.proc.send_signal(signal.SIGTERM)
    rc = arr.proc.wait(timeout=60)
    log = log_path.read_text()
    last = lines(log)[-1]
    assert rc == 1, log[-2000:]
    assert "cannot start" not in log
    assert "unwritten blocks" in last and "next start" in last and str(state / CACHE_FILE) in last, last
    assert "CACHE_DATA_LOST" not in log
