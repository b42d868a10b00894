"""Idle TCP connections cannot starve a portal (issue 12, item 6).

A couple of thousand connections that never log in are opened to one portal; a real initiator
is still served, the idle ones are closed by the login timeout, and the per-address cap
refuses connections at accept. Counts and generous timeouts only, no timed assertions.
"""

from __future__ import annotations

import resource
import selectors
import socket
import subprocess
import time
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig

from ..conftest import need, start_array

pytestmark = pytest.mark.slow

IDLE = 2000


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    return socks


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait until the target has closed every socket; return those still open at the timeout."""
    sel = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_ = {s.fileno(): s for s in socks}
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if _closed_by_peer(s):
                sel.unregister(s)
                del open_[s.fileno()]
    sel.close()
    return list(open_.values())


def test_idle_connections_do_not_starve_a_real_initiator(tmp_path: Path) -> None:
    _raise_nofile(3 * IDLE + 256)  # the emulator inherits the limit
    cfg = tmp_path / "shelf.toml"
    cfg.write_text(
        '[shelf]\nserial = "CIIDLE0001"\n'
        '[[shelf.logical_drives]]\nlun = 1\nbay = 1\nsize = "64MiB"\nname = "idle"\n'
        f"[iscsi]\nlogin_timeout = 4\nmax_connections = {IDLE + 64}\nmax_connections_per_address = {IDLE + 8}\n"
    )
    array = start_array(tmp_path / "state", cfg)
    socks: list[socket.socket] = []
    try:
        socks = _open_idle(array.port1, IDLE)
        # A real initiator, while the idle ones are open.
        out = subprocess.run([need("iscsi-ls"), "-s", f"iscsi://{array.portal(1)}"], capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        assert f"Target:{array.target}" in out.stdout
        ini = Initiator("127.0.0.1", array.port1, InitiatorConfig(initiator_name="iqn.2026-12.test:idle"))
        ini.login(array.target)
        # The idle ones are closed by the login timeout; the logged-in session is not.
        still_open = _wait_all_closed(socks, timeout=120)
        assert not still_open, f"{len(still_open)} idle connections still open"
        ini.test_unit_ready(1)
        ini.logout()
        log = array.log.read_text(errors="replace")
        assert "no login within 4 s" in log
        assert log.count("no login within") < IDLE // 10, "the login timeouts are rate-limited"
    finally:
        for s in socks:
            s.close()
        assert array.stop() == 0, array.log_tail()


def test_per_address_cap_refuses_at_accept(tmp_path: Path) -> None:
    cap = 16
    _raise_nofile(4 * cap + 256)
    cfg = tmp_path / "shelf.toml"
    cfg.write_text(f'[shelf]\nserial = "CIIDLE0002"\n[iscsi]\nmax_connections_per_address = {cap}\n')
    array = start_array(tmp_path / "state", cfg)
    socks: list[socket.socket] = []
    try:
        socks = _open_idle(array.port1, cap)
        time.sleep(0.5)  # let the emulator accept them (an ordering aid, not a timed assertion)
        extra = _open_idle(array.port1, cap)
        socks += extra
        refused = [s for s in extra if not _wait_all_closed([s], timeout=10)]
        assert len(refused) == cap
        assert not any(_closed_by_peer(s) for s in socks[:cap])
        # A logged-in session does not count against the per-address cap.
        for s in socks[:cap]:
            s.close()
        ini = Initiator("127.0.0.1", array.port1, InitiatorConfig(initiator_name="iqn.2026-12.test:cap"))
        deadline = time.monotonic() + 30
        while True:
            try:
                ini.login(array.target)
                break
            except (OSError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                ini = Initiator("127.0.0.1", array.port1, InitiatorConfig(initiator_name="iqn.2026-12.test:cap"))
        ini.logout()
        log = array.log.read_text(errors="replace")
        assert "max_connections_per_address 16" in log
        assert log.count("refusing a connection") <= 2, "one line, then a count"
    finally:
        for s in socks:
            s.close()
        assert array.stop() == 0, array.log_tail()
