"""CHAP hardened (issue 12, item 4): CSPRNG challenges, no replay or reflection across sessions,
secrets never in logs, CHAP for discovery sessions configurable from the TOML."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from msa500_emu.config import ConfigError, load
from msa500_emu.iscsi import chap as chap_mod
from msa500_emu.iscsi.chap import ChapConfig, ChapError, ChapResponder, RecentChallenges, chap_response, encode_hex
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig, LoginError
from msa500_emu.iscsi.node import NodeConfig, TargetNode
from msa500_emu.iscsi.text import parse_text

from .iscsi_harness import TARGET, FakeDisk, connect, make_node

USER, SECRET = "alice", "alice-secret-0123"
TARGET_USER, TARGET_SECRET = "msa500", "target-secret-4567"
CFG = ChapConfig(users={USER: SECRET}, target_user=TARGET_USER, target_secret=TARGET_SECRET)


def chap_node(discovery: ChapConfig | None = None, normal: ChapConfig | None = None) -> TargetNode:
    node = make_node(chap=normal if normal is not None else CFG)
    if discovery is not None:
        node.config.discovery_chap = discovery
    return node


def start_chap(ini: Initiator) -> tuple[int, bytes]:
    """Security stage up to the target's challenge: (CHAP_I, CHAP_C)."""
    keys = [("InitiatorName", ini.config.initiator_name), ("SessionType", "Normal"),
            ("TargetName", TARGET), ("AuthMethod", "CHAP")]
    ini._login_pdu(0, 1, False, keys)
    got = dict(parse_text(ini._login_pdu(0, 1, False, [("CHAP_A", "5")]).data))
    return int(got["CHAP_I"]), chap_mod.decode_binary(got["CHAP_C"])


# ------------------------------------------------------------------------------- challenges
def test_challenges_come_from_the_csprng_and_are_never_reissued(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = [b"\x01" * 16, b"\x01" * 16, b"\x02" * 16]
    monkeypatch.setattr(chap_mod.secrets, "token_bytes", lambda n: draws.pop(0))
    recent = RecentChallenges()
    a = ChapResponder(CFG, recent=recent)
    b = ChapResponder(CFG, recent=recent)
    assert a.challenge == b"\x01" * 16 and b.challenge == b"\x02" * 16  # the repeat was drawn again
    assert a.challenge in recent and b.challenge in recent


def test_recent_challenges_are_bounded() -> None:
    recent = RecentChallenges(size=8)
    for i in range(100):
        recent.add(bytes([i]) * 16)
    assert len(recent._set) == 8 and bytes([99]) * 16 in recent and bytes([0]) * 16 not in recent


def test_a_response_valid_for_an_earlier_challenge_never_passes() -> None:
    recent = RecentChallenges()
    first = ChapResponder(CFG, recent=recent)
    first.step({"CHAP_A": "5"})
    old = encode_hex(chap_response(first.ident, SECRET.encode(), first.challenge))
    first.step({"CHAP_N": USER, "CHAP_R": old})
    assert first.done
    again = ChapResponder(CFG, recent=recent)
    again.step({"CHAP_A": "5"})
    again.ident = first.ident  # even with the same identifier
    with pytest.raises(ChapError, match="wrong CHAP response"):
        again.step({"CHAP_N": USER, "CHAP_R": old})


def test_no_second_response_within_one_exchange() -> None:
    r = ChapResponder(CFG)
    r.step({"CHAP_A": "5"})
    good = encode_hex(chap_response(r.ident, SECRET.encode(), r.challenge))
    r.step({"CHAP_N": USER, "CHAP_R": good})
    with pytest.raises(ChapError, match="after the exchange"):
        r.step({"CHAP_N": USER, "CHAP_R": good})


def test_reflection_of_another_sessions_challenge_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """The target's challenge to session A, sent back by B as its mutual CHAP_C, gets no answer."""
    node = chap_node()
    a, _ = connect(node, config=InitiatorConfig(initiator_name="iqn.2026-12.test:a"))
    _ident_a, chal_a = start_chap(a)  # A now waits for a response to chal_a
    b, conn_b = connect(node, config=InitiatorConfig(initiator_name="iqn.2026-12.test:b", isid=b"\x80\0\0\0\0\2"))
    ident_b, chal_b = start_chap(b)
    answer = [("CHAP_N", USER), ("CHAP_R", encode_hex(chap_response(ident_b, SECRET.encode(), chal_b))),
              ("CHAP_I", "9"), ("CHAP_C", encode_hex(chal_a))]
    with pytest.raises(LoginError) as exc:
        b._login_pdu(0, 1, True, answer)
    assert exc.value.status == 0x0201 and conn_b.close_after_flush
    assert "reflection or replay" in caplog.text


def test_an_initiator_challenge_replayed_in_a_later_login_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    node = chap_node()
    ini, _ = connect(node)
    ident, chal = start_chap(ini)
    mine = encode_hex(b"\x42" * 16)
    resp = encode_hex(chap_response(ident, SECRET.encode(), chal))
    ini._login_pdu(0, 1, True, [("CHAP_N", USER), ("CHAP_R", resp), ("CHAP_I", "1"), ("CHAP_C", mine)])
    again, _ = connect(node, config=InitiatorConfig(isid=b"\x80\0\0\0\0\3"))
    ident, chal = start_chap(again)
    resp = encode_hex(chap_response(ident, SECRET.encode(), chal))
    with pytest.raises(LoginError) as exc:
        again._login_pdu(0, 1, True, [("CHAP_N", USER), ("CHAP_R", resp), ("CHAP_I", "1"), ("CHAP_C", mine)])
    assert exc.value.status == 0x0201
    assert "reflection or replay" in caplog.text


def test_mutual_chap_logins_one_after_another_succeed() -> None:
    node = chap_node()
    for n in range(3):
        cfg = InitiatorConfig(isid=bytes([0x80, 0, 0, 0, 0, n + 1]), chap_user=USER, chap_secret=SECRET,
                              mutual_secret=TARGET_SECRET)
        ini, _ = connect(node, config=cfg)
        ini.login(TARGET)


# ------------------------------------------------------------------------- secrets in logs
def test_no_secret_appears_in_any_log_line_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    node = chap_node(discovery=ChapConfig(users={"disco": "discovery-secret-89"}))
    good = InitiatorConfig(chap_user=USER, chap_secret=SECRET, mutual_secret=TARGET_SECRET)
    ini, _ = connect(node, config=good)
    ini.login(TARGET)
    ini.logout()
    wrong = InitiatorConfig(isid=b"\x80\0\0\0\0\7", chap_user=USER, chap_secret="not-the-secret-xyz")
    with pytest.raises(LoginError):
        connect(node, config=wrong)[0].login(TARGET)
    disco = InitiatorConfig(isid=b"\x80\0\0\0\0\x08", chap_user="disco", chap_secret="discovery-secret-89")
    connect(node, config=disco)[0].login(None, discovery=True)
    text = caplog.text + "\n".join(repr(r.args) for r in caplog.records)
    assert "login stage 0 keys" in text  # the key logging ran
    for secret in (SECRET, TARGET_SECRET, "not-the-secret-xyz", "discovery-secret-89"):
        assert secret not in text
    for shown in (repr(node.config), repr(CFG), [s.describe() for s in node.sessions.values()]):
        assert SECRET not in str(shown) and TARGET_SECRET not in str(shown)


# --------------------------------------------------------------------------- discovery CHAP
def test_discovery_sessions_may_require_chap() -> None:
    node = TargetNode(NodeConfig(target_name=TARGET, discovery_chap=ChapConfig(users={USER: SECRET})),
                      FakeDisk(), list(make_node().portals.values()))
    with pytest.raises(LoginError) as exc:
        connect(node)[0].login(None, discovery=True)
    assert exc.value.status == 0x0201
    ini, _ = connect(node, config=InitiatorConfig(chap_user=USER, chap_secret=SECRET))
    ini.login(None, discovery=True)
    assert ("TargetName", TARGET) in ini.text([("SendTargets", "All")])
    plain, _ = connect(node, config=InitiatorConfig(isid=b"\x80\0\0\0\0\x09"))
    plain.login(TARGET)  # normal sessions: no CHAP configured for them


def test_discovery_chap_and_the_limits_come_from_the_toml(tmp_path: Path) -> None:
    path = tmp_path / "shelf.toml"
    path.write_text(
        "[iscsi]\nlogin_timeout = 5\nmax_connections = 200\nmax_connections_per_address = 8\n"
        '[iscsi.chap.users]\nalice = "alice-secret-0123"\n'
        '[iscsi.discovery_chap]\ntarget_user = "msa500"\ntarget_secret = "target-secret-4567"\n'
        '[iscsi.discovery_chap.users]\ndisco = "discovery-secret-89"\n'
    )
    s = load(path, {})
    assert s.discovery_chap.users == {"disco": "discovery-secret-89"} and s.discovery_chap.target_user == "msa500"
    assert s.chap.users == {"alice": "alice-secret-0123"}
    assert (s.login_timeout, s.max_connections, s.max_connections_per_address) == (5.0, 200, 8)
    defaults = load(None, {})
    assert (defaults.login_timeout, defaults.max_connections, defaults.max_connections_per_address) == (15.0, 1024, 64)
    assert not defaults.discovery_chap.required


@pytest.mark.parametrize(("toml", "said"), [
    ('[iscsi.discovery_chap.users]\nd = "short"\n', "iscsi.discovery_chap.users.d"),
    ('[iscsi.discovery_chap]\ntarget_user = "x"\n', "iscsi.discovery_chap: target_user and target_secret"),
    ("[iscsi]\nlogin_timeout = 0\n", "iscsi.login_timeout"),
    ("[iscsi]\nmax_connections = 0\n", "iscsi.max_connections"),
    ("[iscsi]\nmax_connections_per_address = 100000\n", "iscsi.max_connections_per_address"),
])
def test_bad_settings_are_named(tmp_path: Path, toml: str, said: str) -> None:
    path = tmp_path / "shelf.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=said.replace(".", r"\.")):
        load(path, {})
