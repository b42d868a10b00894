#!/usr/bin/python3
"""The RSO lab's network service: a small key-value store that keeps its state on the shared disk.

Runs inside the lab guest (installed as /opt/lab/kvstore.py; standard library only). TCP, one
request per line (UTF-8), one answer line per request:

    PUT key value    -> OK <seq>            appended to the log, file fsync'd, then answered
    INCR key         -> OK <seq> <value>    an integer counter, same durability as PUT
    GET key          -> VAL <value> | NONE
    PING             -> PONG <host>-<role> <seq>
    STATS            -> STATS seq=.. keys=.. records=.. torn=.. host=.. role=..
    QUIT             -> BYE, then the connection closes
    AGENT STOP|CONT  -> OK ...               (the lab: the OS stops/resumes scheduling the RSO agent)
    HALT             -> OK halting           (clean shutdown: init unmounts and powers off)
    anything else    -> ERR <reason>

Every acknowledged PUT/INCR survives a hard kill of the VM: the record is written to
<dir>/log and fsync'd (the directory too when the log is created) before the answer is sent.
Log record: "<crc32 of payload, 8 hex> <payload>\\n", payload = JSON [seq, key, value]. At start
the log is replayed; an incomplete or corrupt tail (a write torn by the crash) is cut off.
After a write error (e.g. the array fenced this server) every later update answers ERR.
host and role come from the kernel command line (msa500.host=, msa500.role=) unless given.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import zlib

MAX_LINE = 64 * 1024


def kernel_args() -> dict[str, str]:
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        return {}
    return dict(w.split("=", 1) for w in words if "=" in w)


def encode_record(seq: int, key: str, value: str) -> bytes:
    payload = json.dumps([seq, key, value], ensure_ascii=False, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_record(line: bytes) -> tuple[int, str, str] | None:
    """One log line (without its newline) -> (seq, key, value), or None if damaged."""
    crc, sep, payload = line.partition(b" ")
    if not sep or len(crc) != 8:
        return None
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        seq, key, value = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(seq, int) or not isinstance(key, str) or not isinstance(value, str):
        return None
    return seq, key, value


class Store:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.path = os.path.join(directory, "log")
        self.data: dict[str, str] = {}
        self.seq = 0
        self.records = 0
        self.torn = 0  # bytes cut off the tail at start
        self.skipped = 0  # damaged records before the tail (should stay 0)
        self.broken: str | None = None
        self.lock = threading.Lock()
        os.makedirs(directory, exist_ok=True)
        self._replay()
        created = not os.path.exists(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _replay(self) -> None:
        try:
            with open(self.path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            return
        good_end = 0  # offset just past the last valid record
        pos = 0
        while pos < len(blob):
            nl = blob.find(b"\n", pos)
            if nl < 0:
                break  # no newline: torn tail
            rec = decode_record(blob[pos:nl])
            if rec is None:
                self.skipped += 1
            else:
                seq, key, value = rec
                if seq > self.seq:
                    self.data[key] = value
                    self.seq = seq
                    self.records += 1
                    good_end = nl + 1
                else:
                    self.skipped += 1
            pos = nl + 1
        if good_end < len(blob):
            # Damaged records after the last good one are the tail a crash tore: cut them off so
            # new records do not follow garbage. Damage before it is counted, never dropped.
            tail = blob[good_end:]
            self.skipped -= tail.count(b"\n")
            self.torn = len(tail)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def _append(self, key: str, value: str) -> int:
        if self.broken:
            raise OSError(f"store failed earlier: {self.broken}")
        seq = self.seq + 1
        data = encode_record(seq, key, value)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            os.fsync(self.fd)
        except OSError as exc:
            self.broken = f"{exc.strerror or exc} (errno {exc.errno})"
            raise
        self.seq = seq
        self.records += 1
        self.data[key] = value
        return seq

    def put(self, key: str, value: str) -> int:
        with self.lock:
            return self._append(key, value)

    def incr(self, key: str) -> tuple[int, int]:
        with self.lock:
            try:
                value = int(self.data.get(key, "0")) + 1
            except ValueError:
                raise ValueError(f"{key} does not hold an integer") from None
            return self._append(key, str(value)), value

    def get(self, key: str) -> str | None:
        with self.lock:
            return self.data.get(key)


class Service:
    def __init__(self, store: Store, label: str, role: str) -> None:
        self.store = store
        self.label = label
        self.role = role

    def answer(self, line: str) -> str | None:
        """One request line -> one answer line (None: close the connection)."""
        cmd, _, rest = line.partition(" ")
        cmd = cmd.upper()
        st = self.store
        try:
            if cmd == "PUT":
                key, sep, value = rest.partition(" ")
                if not key or not sep:
                    return "ERR usage: PUT key value"
                return f"OK {st.put(key, value)}"
            if cmd == "INCR":
                key = rest.strip()
                if not key or " " in key:
                    return "ERR usage: INCR key"
                seq, count = st.incr(key)
                return f"OK {seq} {count}"
            if cmd == "GET":
                key = rest.strip()
                if not key:
                    return "ERR usage: GET key"
                found = st.get(key)
                return "NONE" if found is None else f"VAL {found}"
            if cmd == "PING":
                return f"PONG {self.label}-{self.role} {st.seq}"
            if cmd == "STATS":
                return (f"STATS seq={st.seq} keys={len(st.data)} records={st.records} torn={st.torn} "
                        f"skipped={st.skipped} broken={int(bool(st.broken))} host={self.label} role={self.role}")
            if cmd == "QUIT":
                return None
            if cmd == "AGENT":  # the lab's hang-primary / wake-primary: stop or resume the RSO agent
                action = rest.strip().upper()
                if action not in ("STOP", "CONT"):
                    return "ERR usage: AGENT STOP|CONT"
                with open("/run/agent.pid") as f:
                    pid = int(f.read().split()[0])
                os.kill(pid, signal.SIGSTOP if action == "STOP" else signal.SIGCONT)
                return f"OK agent {pid} {'stopped' if action == 'STOP' else 'resumed'}"
            if cmd == "HALT":  # a clean shutdown: init unmounts and powers off
                os.kill(1, signal.SIGUSR2)
                return "OK halting"
        except OSError as exc:
            return f"ERR io {exc.strerror or exc}"
        except ValueError as exc:
            return f"ERR {exc}"
        return "ERR unknown command (PUT, INCR, GET, PING, STATS, QUIT, AGENT, HALT)"


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def handle(self) -> None:
        service = self.server.service
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE:
                self.wfile.write(b"ERR line too long\n")
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            reply = service.answer(line)
            if reply is None:
                self.wfile.write(b"BYE\n")
                return
            self.wfile.write(reply.encode() + b"\n")
            self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], service: Service) -> None:
        self.service = service
        super().__init__(addr, Handler)


def main(argv: list[str] | None = None) -> int:
    kargs = kernel_args()
    ap = argparse.ArgumentParser(description="The RSO lab's key-value service")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--dir", default="/var/lib/kv")
    ap.add_argument("--host-label", default=kargs.get("msa500.host") or socket.gethostname())
    ap.add_argument("--role", default=kargs.get("msa500.role", "unknown"))
    ap.add_argument("--pidfile")
    args = ap.parse_args(argv)

    store = Store(args.dir)
    server = Server((args.bind, args.port), Service(store, args.host_label, args.role))
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"@@SERVICE up port={args.port} seq={store.seq} keys={len(store.data)} records={store.records} "
          f"torn={store.torn} skipped={store.skipped}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        os.close(store.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
