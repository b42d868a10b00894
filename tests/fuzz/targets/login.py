"""The login/text key parser: a byte stream into a fresh target Connection (login, then full
feature phase against a fake disk; CHAP required when the first byte's top bit is set), and the
same bytes as a text segment through parse_text and the negotiation rules. Reject PDUs, login
failures and clean closes are answers; a connection the target closes with "internal error"
(its catch-all) is a crash."""

from __future__ import annotations

from msa500_emu.iscsi.chap import ChapConfig
from msa500_emu.iscsi.params import NegotiationError, SessionParams, answer
from msa500_emu.iscsi.text import TextError, parse_text
from tests.unit.iscsi_harness import Clock, FakeDisk, make_node

from ._errors import capture

MAX_LEN = 16384  # the longest input libFuzzer tries (scripts/fuzz -max_len)

USER, SECRET = "fuzz", "fuzz-secret-123"  # the seeds' CHAP login (tests/fuzz/make_corpus.py)

_LOG = capture("msa500_emu")
CHAP = ChapConfig(users={USER: SECRET}, target_user="msa500", target_secret="target-secret-1")


def _text(data: bytes) -> None:
    try:
        pairs = parse_text(data)
    except TextError:
        return
    params = SessionParams()
    for key, value in pairs[:256]:
        try:
            _reply, in_force = answer(key, value)
        except NegotiationError:
            continue
        if in_force is not None:
            params.apply(key, in_force)
    params.fix_up()


def TestOneInput(data: bytes) -> None:
    _text(data)
    if not data:
        return
    from msa500_emu.iscsi.connection import Connection

    node = make_node(FakeDisk(blocks=64), CHAP if data[0] & 0x80 else None)
    clock = Clock()
    conn = Connection(node, node.portals[1], clock)
    chunk = 1 + (data[0] & 0x7F) * 8
    _LOG.last = ""
    for start in range(1, len(data), chunk):
        conn.receive(data[start : start + chunk])
        conn.take_output()
        if conn.closed:
            break
    clock.t += 60.0  # timers (NOP-In, login timeout) fire once
    conn.on_timer(clock.t)
    conn.take_output()
    conn.connection_lost()
    if conn.close_reason == "internal error" or _LOG.last:
        raise RuntimeError(f"the target hit an internal error:\n{_LOG.last}")
