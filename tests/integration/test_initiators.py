"""Real initiators nobody here wrote (libiscsi tools, QEMU) against the running emulator."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

from ..conftest import RunningArray, need, start_array

pytestmark = pytest.mark.slow


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, check=False)


@pytest.mark.parametrize("port", [1, 2])
def test_iscsi_ls_lists_target_and_luns(array: RunningArray, port: int) -> None:
    out = run(need("iscsi-ls"), "-s", f"iscsi://{array.portal(port)}")
    assert out.returncode == 0, out.stderr
    assert f"Target:{array.target} Portal:{array.portal(port)},{port}" in out.stdout
    luns = re.findall(r"Lun:(\d+)\s+Type:(\S+)", out.stdout)
    want = [("0", "STORAGE_ARRAY_CONTROLLER"), ("1", "DIRECT_ACCESS"), ("2", "DIRECT_ACCESS")]
    assert luns == want, out.stdout


def test_iscsi_inq_controller_and_logical_drive(array: RunningArray) -> None:
    lun0 = run(need("iscsi-inq"), array.url(lun=0))
    assert lun0.returncode == 0, lun0.stderr
    assert "Peripheral Device Type:STORAGE_ARRAY_CONTROLLER" in lun0.stdout
    lun1 = run(need("iscsi-inq"), array.url(lun=1))
    assert lun1.returncode == 0, lun1.stderr
    assert "Vendor:COMPAQ" in lun1.stdout
    vpd83 = run(need("iscsi-inq"), "-e", "1", "-c", "131", array.url(lun=1))
    assert vpd83.returncode == 0, vpd83.stderr
    for designator in ("RELATIVE_TARGET_PORT", "TARGET_PORT_GROUP", "NAA", f"[{array.target},t,0x0001]"):
        assert designator in vpd83.stdout, vpd83.stdout
    serial = run(need("iscsi-inq"), "-e", "1", "-c", "128", array.url(lun=1))
    assert serial.returncode == 0 and "Unit Serial Number:[CITEST0001L01]" in serial.stdout, serial.stdout


def test_relative_target_port_differs_per_port(array: RunningArray) -> None:
    rtp = []
    for port in (1, 2):
        ini = Initiator("127.0.0.1", array.port1 if port == 1 else array.port2,
                        InitiatorConfig(initiator_name=f"iqn.2026-11.test:rtp{port}"))
        ini.login(array.target)
        r = ini.scsi(1, bytes([0x12, 1, 0x83, 0, 255, 0]), read_len=255)
        ini.logout()
        page = r.data
        pos = 4
        while pos + 4 <= len(page):
            dtype, dlen = page[pos + 1] & 0x0F, page[pos + 3]
            if dtype == 4:
                rtp.append(int.from_bytes(page[pos + 6 : pos + 8], "big"))
            pos += 4 + dlen
    assert rtp == [1, 2]


def test_readcapacity16(array: RunningArray) -> None:
    out = run(need("iscsi-readcapacity16"), array.url(lun=1))
    assert out.returncode == 0, out.stderr
    assert "LOGICAL BLOCK LENGTH IN BYTES:512" in out.stdout, out.stdout
    assert f"RETURNED LOGICAL BLOCK ADDRESS:{(1 << 30) // 512 - 1}" in out.stdout
    assert f"Total size:{1 << 30}" in out.stdout


def test_qemu_io_patterned_write_then_read_on_both_ports(array: RunningArray) -> None:
    qemu_io = need("qemu-io")
    w = run(qemu_io, "-f", "raw", "-c", "write -P 0xa5 1M 3M", "-c", "write -P 0x3c 7M 64k", array.url(1))
    assert w.returncode == 0 and "wrote" in w.stdout, w.stdout + w.stderr
    r = run(qemu_io, "-f", "raw", "-c", "read -P 0xa5 1M 3M", "-c", "read -P 0x3c 7M 64k",
            "-c", "read -P 0 0 1M", array.url(2))
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout + r.stderr


def test_qemu_img_convert_and_compare(array: RunningArray, tmp_path: Path) -> None:
    qemu_img = need("qemu-img")
    src = tmp_path / "src.raw"
    import os

    data = os.urandom(5 << 20)
    src.write_bytes(data)
    info = run(qemu_img, "info", "--output=json", array.url(lun=2))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["virtual-size"] == 64 << 20
    conv = run(qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(src), array.url(lun=2), timeout=120)
    assert conv.returncode == 0, conv.stderr
    back = tmp_path / "back.raw"
    dump = run(qemu_img, "dd", "-f", "raw", "-O", "raw", f"if={array.url(lun=2)}", f"of={back}",
               "bs=1M", "count=5", timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert back.read_bytes() == data


def test_garbage_from_one_client_leaves_other_session_unharmed(array: RunningArray) -> None:
    ini = Initiator("127.0.0.1", array.port1, InitiatorConfig(initiator_name="iqn.2026-11.test:victim"))
    ini.login(array.target)
    ini.clear_unit_attentions(1)
    payload = bytes(range(256)) * 16
    errors: list[str] = []
    done = threading.Event()

    def io() -> None:
        try:
            for i in range(200):
                ini.write(1, 5000 + i * 8, payload)
                if ini.read(1, 5000 + i * 8, 8) != payload:
                    errors.append(f"mismatch at {i}")
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            done.set()

    t = threading.Thread(target=io)
    t.start()
    import random

    rnd = random.Random(7)
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", array.port1), timeout=5) as s:
            s.sendall(rnd.randbytes(rnd.randint(1, 4000)))
            s.settimeout(0.2)
            try:
                s.recv(100)
            except (TimeoutError, OSError):
                pass
    t.join(60)
    assert done.is_set() and not errors, errors
    ini.logout()
    assert array.proc.poll() is None


def test_ctl_show_globals(array: RunningArray) -> None:
    out = run(sys.executable, "-m", "msa500_emu", "ctl", "--api", array.api, "show", "globals")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^  Serial Number:\s+CITEST0001$", out.stdout, re.MULTILINE), out.stdout
    js = run(sys.executable, "-m", "msa500_emu", "ctl", "--api", array.api, "--json", "SHOW GLOBALS")
    assert json.loads(js.stdout)["result"]["bays"] == 14
    bad = run(sys.executable, "-m", "msa500_emu", "ctl", "--api", array.api, "SHOW NONSENSE")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "unknown SHOW" in bad.stderr


def test_bad_config_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[shelf]\ndrive_size = "lots"\n')
    out = run(sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(tmp_path / "s"),
              "--config", str(cfg))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "shelf.drive_size" in out.stderr
    out = run(sys.executable, "-m", "msa500_emu", "serve", "--port1", "nonsense")
    assert out.returncode == 2 and "--port1" in out.stderr


def test_restart_keeps_data_and_identity(tmp_path: Path) -> None:
    first = start_array(tmp_path / "st")
    try:
        ini = Initiator("127.0.0.1", first.port1)
        ini.login(first.target)
        ini.clear_unit_attentions(1)
        ini.write(1, 1234, b"\x42" * 4096, fua=True)
        ini.logout()
    finally:
        assert first.stop() == 0
    assert "stopped cleanly" in (first.proc.stdout.read() if first.proc.stdout else "")
    second = start_array(tmp_path / "st")
    try:
        assert second.target == first.target
        ini = Initiator("127.0.0.1", second.port1)
        ini.login(second.target)
        assert ini.clear_unit_attentions(1).status == 0
        assert ini.read(1, 1234, 8) == b"\x42" * 4096
        ini.logout()
        # the default shelf: drives in bays 1-10, bays 11-14 empty
        assert sorted(p.name for p in (tmp_path / "st").glob("bay*.img")) == [f"bay{b:02d}.img" for b in range(1, 11)]
    finally:
        second.stop()


def test_sigterm_with_open_sessions_is_clean(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "st2")
    ini = Initiator("127.0.0.1", arr.port1)
    ini.login(arr.target)
    t0 = time.monotonic()
    assert arr.stop() == 0
    assert time.monotonic() - t0 < 20
    with pytest.raises((ConnectionError, OSError)):
        ini.test_unit_ready(1)


def test_qemu_with_header_digest_crc32c(array: RunningArray) -> None:
    opts = (f"driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={array.portal(1)},"
            f"file.target={array.target},file.lun=1,file.header-digest=crc32c,"
            "file.initiator-name=iqn.2026-11.test:hdigest")
    out = run(need("qemu-io"), "--image-opts", "-c", "write -P 0x5a 2M 256k",
              "-c", "read -P 0x5a 2M 256k", opts)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out.stdout + out.stderr
    log = array.log.read_text()
    pattern = r"normal session: iqn\.2026-11\.test:hdigest on port 1 \(tsih \d+, HeaderDigest=CRC32C"
    assert re.search(pattern, log), log


def test_chap_with_libiscsi(tmp_path: Path) -> None:
    cfg = tmp_path / "chap.toml"
    cfg.write_text('[iscsi.chap]\nusers = { "alice" = "alice-secret-1234" }\n')
    arr = start_array(tmp_path / "st", cfg)
    try:
        good = run(need("iscsi-inq"), arr.url(1, 1).replace("iscsi://", "iscsi://alice%alice-secret-1234@"))
        assert good.returncode == 0 and "DIRECT_ACCESS" in good.stdout, good.stderr
        bad = run(need("iscsi-inq"), arr.url(1, 1).replace("iscsi://", "iscsi://alice%wrong-secret-999@"))
        assert bad.returncode != 0
        none = run(need("iscsi-inq"), arr.url(1, 1))
        assert none.returncode != 0
    finally:
        assert arr.stop() == 0
    log = arr.log.read_text()
    assert "refused (0x0201): wrong CHAP response for user 'alice'" in log, log
