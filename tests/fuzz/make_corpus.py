"""Writes the seed corpora under tests/fuzz/corpus/ (run again after a wire format changes):
  .venv/bin/python -m tests.fuzz.make_corpus

login/pdu: what the project's initiator sends (and the target answers) logging in, reading,
writing and logging out over the in-process harness, with and without digests; cdb: typical CDBs
on each LUN; ctl: command-language lines from the README; config: the README's TOML examples.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from msa500_emu.iscsi.initiator import InitiatorConfig
from tests.fuzz.targets import login as login_target
from tests.unit.iscsi_harness import TARGET, LoopSocket, connect, make_node

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"


class Recording(LoopSocket):
    """The harness socket, keeping both directions."""

    sent: bytearray
    received: bytearray

    def sendall(self, data: bytes) -> None:
        self.sent += data
        super().sendall(data)

    def recv(self, n: int) -> bytes:
        out = super().recv(n)
        self.received += out
        return out


def session(digest: str, discovery: bool, chap: bool = False) -> tuple[bytes, bytes]:
    node = make_node(chap=login_target.CHAP if chap else None)
    config = InitiatorConfig(header_digest=digest, data_digest=digest)
    if chap:
        config.chap_user, config.chap_secret = login_target.USER, login_target.SECRET
        config.mutual_secret = login_target.CHAP.target_secret
    ini, conn = connect(node, config=config)
    sock = Recording(conn)
    sock.sent, sock.received = bytearray(), bytearray()
    ini.sock = sock
    if discovery:
        ini.login(None, discovery=True)
        ini.text([("SendTargets", "All")])
    else:
        ini.login(TARGET)
        ini.test_unit_ready(1)
        ini.write(1, 0, bytes(range(256)) * 4)
        ini.read(1, 0, 2)
        ini.nop(b"ping")
    ini.logout()
    return bytes(sock.sent), bytes(sock.received)


def save(target: str, data: bytes) -> None:
    where = CORPUS / target
    where.mkdir(parents=True, exist_ok=True)
    (where / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def cdbs() -> list[bytes]:
    read10 = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0)
    write10 = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0)
    read16 = struct.pack(">BBQIBB", 0x88, 0, 8, 2, 0, 0)
    write16 = struct.pack(">BBQIBB", 0x8A, 0, 8, 1, 0, 0)
    seeds = [
        (0, bytes(6), b""),  # TEST UNIT READY
        (0, bytes([0x12, 0, 0, 0, 96, 0]), b""),  # INQUIRY
        (1, bytes([0x12, 1, 0x83, 0, 255, 0]), b""),  # INQUIRY VPD device identification
        (1, bytes([0x12, 1, 0xB0, 0, 64, 0]), b""),  # Block Limits
        (1, bytes([0x25]) + bytes(9), b""),  # READ CAPACITY(10)
        (2, bytes([0x9E, 0x10]) + bytes(8) + bytes([0, 0, 0, 32, 0, 0]), b""),  # READ CAPACITY(16)
        (0, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), b""),  # REPORT LUNS
        (1, bytes([0x1A, 0, 0x3F, 0, 255, 0]), b""),  # MODE SENSE(6) all pages
        (1, bytes([0x5A, 0, 0x08, 0, 0, 0, 0, 1, 0, 0]), b""),  # MODE SENSE(10) caching
        (1, bytes([0x03, 0, 0, 0, 252, 0]), b""),  # REQUEST SENSE
        (1, read10, b""), (2, write10, bytes(512)), (2, read16, b""), (1, write16, b"\x5a" * 512),
        (1, bytes([0x35]) + bytes(9), b""),  # SYNCHRONIZE CACHE(10)
        (1, bytes([0x5E, 0, 0, 0, 0, 0, 0, 0, 255, 0]), b""),  # PERSISTENT RESERVE IN read keys
        (1, bytes([0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0]), bytes(8) + struct.pack(">Q", 0xABC) + bytes(8)),  # REGISTER
        (1, bytes([0x16]) + bytes(5), b""), (1, bytes([0x17]) + bytes(5), b""),  # RESERVE / RELEASE(6)
        (1, bytes([0x1B, 0, 0, 0, 1, 0]), b""),  # START STOP UNIT
        (0, bytes([0xA3, 0x0A]) + bytes(4) + struct.pack(">I", 512) + bytes(2), b""),  # REPORT TARGET PORT GROUPS
        (0, bytes([0xA3, 0x0C, 0]) + bytes(3) + struct.pack(">I", 512) + bytes(2), b""),  # REPORT SUPPORTED OPS
        (1, bytes([0x42]) + bytes(6) + bytes([0, 24, 0]), bytes([0, 22, 0, 16]) + bytes(4) + struct.pack(">QI", 0, 1)
         + bytes(4)),  # UNMAP
        (1, bytes([0x93, 0]) + struct.pack(">QI", 0, 4) + bytes(2), bytes(512)),  # WRITE SAME(16)
        (0, bytes([0xC0]) + bytes(9), b""), (0, bytes([0xC1, 0, 0, 0, 0, 0, 0, 0, 64, 0]), b""),  # vendor (RSO)
        (3, bytes(6), b""),  # a LUN nobody mapped
    ]
    lengths = {6: 0, 10: 1, 12: 2, 16: 3, 32: 4}
    out = []
    for lun, cdb, data in seeds:
        n = min((k for k in lengths if k >= len(cdb)), default=32)
        out.append(bytes([lun, 0x80 | lengths[n]]) + cdb.ljust(n, b"\0") + len(data).to_bytes(2, "big") + data)
    # a few sequences: register, reserve, write, read, release; a second host bumping into it
    register, reserve, write_, read_, release, tur = (out[16], out[17], out[13], out[10], out[18], out[0])
    other = bytes([0x81]) + write_[1:]
    return [*out, register + reserve + write_ + read_ + release, reserve + other + tur + release]


def readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines = set()
    for m in re.finditer(r"`((?:SHOW|ADD|DELETE|SET|FAULT|CLEAR|POWER|RSO|HELP|EXPAND|MIGRATE|REBUILD|ACCEPT|"
                         r"SPARE|CHANGE|RESCAN|REDUNDANCY)\b[^`]*)`", text):
        lines.add(m.group(1))
    lines |= {"SHOW GLOBALS", "SHOW DISKS", "SHOW UNITS", "SHOW EVENTS", "HELP", "SHOW UNIT 1",
              "ADD UNIT 3 DATA=\"DISK8-DISK9\" RAID_LEVEL=1 SIZE=8MB", "DELETE UNIT 2",
              "FAULT DISK3 fail", "FAULT DISK4 latency ms=50", "CLEAR DISK3"}
    from msa500_emu.management.commands import COMMANDS

    for command in COMMANDS.values():  # the usage forms, with concrete words for the placeholders
        for form in command.forms:
            lines.add(re.sub(r"\bn\b", "1", form.usage).replace("DISKm", "DISK8").replace("[", "").replace("]", ""))
    return sorted(lines)


def readme_tomls() -> list[bytes]:
    text = (ROOT / "README.md").read_text()
    blocks = [m.group(1).encode() for m in re.finditer(r"```toml\n(.*?)```", text, re.S)]
    for path in sorted((ROOT / "docs").glob("*.md")):
        blocks += [m.group(1).encode() for m in re.finditer(r"```toml\n(.*?)```", path.read_text(), re.S)]
    return [*blocks, b'port1 = "127.0.0.1:3260"\nlog_level = "debug"\n']


def main() -> None:
    for digest in ("None", "CRC32C"):
        for discovery in (False, True):
            sent, received = session(digest, discovery)
            save("login", b"\x08" + sent)
            save("pdu", bytes([0x40 | (3 if digest == "CRC32C" else 0)]) + sent)
            save("pdu", b"\x80" + received)
    sent, _ = session("None", False, chap=True)
    save("login", b"\x82" + sent)
    for item in cdbs():
        save("cdb", item)
    for line in readme_lines():
        save("ctl", line.encode())
    for toml in readme_tomls():
        save("config", toml)
    for text in (b"InitiatorName=iqn.2026-11.org:x\0SessionType=Normal\0TargetName=" + TARGET.encode() + b"\0"
                 b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0FirstBurstLength=0x10000\0",):
        save("login", text)


if __name__ == "__main__":
    main()
