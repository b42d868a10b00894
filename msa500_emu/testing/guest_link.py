"""One guest TCP connection to an array port, run by QEMU's guestfwd (stdin/stdout are the guest's socket).

    python3 -I -S guest_link.py HOST PORT   (-I: this directory holds an array.py that would shadow the stdlib)

QEMU's user networking accepts the guest's connection before anything on the host is asked, so a
port that is DOWN cannot refuse it. A forwarder that then closed at once (busybox nc did) gives the
guest a connection accepted and closed before login, and the guest's kernel 6.1 initiator never
recovers from that: iscsid binds the socket, the kernel's own cleanup of the dead connection races
iscsid's, and every later bind of that session fails with ENOTCONN (-107). So this forwarder does what
a retransmitted SYN does on a real network: while the port refuses, it keeps trying (every 0.25 s, at
most HOLD_S), and the guest's login waits or times out by its own rules; once connected it copies bytes
both ways until either side closes. Standard library only, no imports of the project: it starts per
connection.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

HOLD_S = 900.0  # at most this long waiting for a port that refuses (a guest gives up long before)
RETRY_S = 0.25
CHUNK = 256 * 1024


def connect(host: str, port: int, guest: int) -> socket.socket | None:
    """Connected to host:port, or None when the guest closed first or HOLD_S passed."""
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError:
            pass
        ready, _, _ = select.select([guest], [], [], RETRY_S)
        if ready:
            if _closed(guest):
                return None
            time.sleep(RETRY_S)  # bytes from the guest wait in its socket until we are connected
    return None


def _closed(fd: int) -> bool:
    """Has the guest closed its side (a peek at the socket behind fd, which stays open)?"""
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.close()


def pump(guest_in: int, guest_out: int, sock: socket.socket) -> None:
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = sock.fileno()
    while True:
        ready, _, _ = select.select([guest_in, s], [], [])
        if guest_in in ready:
            data = os.read(guest_in, CHUNK)
            if not data:
                sock.shutdown(socket.SHUT_WR)
                _drain(s, guest_out)
                return
            sock.sendall(data)
        if s in ready:
            data = sock.recv(CHUNK)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(guest_out, view):]


def _drain(s: int, guest_out: int) -> None:
    """After the guest closed its side: what the array still sends, until it closes (bounded)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], 0.5)
        if ready:
            data = os.read(s, CHUNK)
            if not data:
                return
            try:
                os.write(guest_out, data)
            except OSError:
                return


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: guest_link.py HOST PORT", file=sys.stderr)
        return 2
    sock = connect(argv[1], int(argv[2]), 0)
    if sock is None:
        return 0
    try:
        pump(0, 1, sock)
    except OSError:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
