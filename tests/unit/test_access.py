"""Host connections (who may log in on which port) and Selective Storage Presentation (who sees
which unit): the controller's room, the SCSI target's answers, NVRAM, the command language."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from firmware_model import operations as ops
from firmware_model.controller import Controller, ControllerError
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.management.commands import CommandError, run
from tests.unit.shelf_helpers import Clocked, codes, sense

WEB = "iqn.2026-01.test:web"
DB = "iqn.2026-01.test:db"
WEB1 = Nexus(f"{WEB},i,0x000001", 1)
WEB2 = Nexus(f"{WEB},i,0x000001", 2)
DB1 = Nexus(f"{DB},i,0x000002", 1)
REPORTED_LUNS_CHANGED = (0x6, 0x3F, 0x0E)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


@pytest.fixture
def c(env: Clocked, tmp_path: Path) -> Controller:
    return env.open(tmp_path)


def send(c: Controller, nexus: Nexus, lun: int, cdb: bytes) -> ScsiResult:
    return c.target.execute(ScsiRequest(nexus, lun, cdb, b"", 0))


def settle(c: Controller, *nexuses: Nexus) -> None:
    """Take the power-on unit attentions of each nexus on every LUN."""
    for n in nexuses:
        for lun in (0, 1, 2):
            for _ in range(8):
                res = send(c, n, lun, bytes(6))
                if not (res.status == Status.CHECK_CONDITION and sense(res)[0] == 0x6):
                    break


def report_luns(c: Controller, nexus: Nexus) -> list[int]:
    res = send(c, nexus, 0, bytes([0xA0, 0, 0, 0, 0, 0]) + struct.pack(">I", 4096) + bytes(2))
    assert res.status == Status.GOOD, res
    n = struct.unpack(">I", res.data[:4])[0] // 8
    return [struct.unpack(">H", res.data[8 + 8 * i: 10 + 8 * i])[0] & 0x3FFF for i in range(n)]


INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
READ10 = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0)


def test_ports_admit_anyone_until_limited_to_their_connections(c: Controller) -> None:
    assert c.access.may_login(WEB, 1) and c.access.may_login(DB, 2)
    c.add_connection("web", WEB, 1)
    c.add_connection("db", DB.upper())  # iSCSI names compare case-insensitively; either port
    c.set_port_access(1, "connections")
    assert c.access.may_login(WEB, 1) and c.access.may_login(DB, 1)
    assert not c.access.may_login("iqn.2026-01.test:stranger", 1)
    assert c.access.may_login("iqn.2026-01.test:stranger", 2)  # port 2 still ALL
    c.set_port_access(2, "connections")
    assert not c.access.may_login(WEB, 2)  # web's connection is on port 1 only
    assert c.access.may_login(DB, 2)
    assert "CONFIG_CHANGED" in codes(c)


def test_the_iscsi_node_refuses_logins_and_lists_nothing_to_strangers(c: Controller) -> None:
    portal = PortalInfo(1, "127.0.0.1", 3260)
    node = TargetNode(NodeConfig(target_name=c.identity.target_name), c.target, [portal])
    node.access = c.access
    assert node.send_targets(portal, "All", DB)
    c.add_connection("web", WEB, 1)
    c.set_port_access(1, "connections")
    assert not node.may_login(DB, 1) and node.may_login(WEB, 1)
    assert node.send_targets(portal, "All", DB) == []
    assert node.send_targets(portal, "All", WEB)[0] == ("TargetName", c.identity.target_name)


def test_a_unit_with_an_acl_is_seen_by_its_connections_only(c: Controller) -> None:
    settle(c, WEB1, WEB2, DB1)
    assert report_luns(c, DB1) == [0, 1, 2]
    c.add_connection("web", WEB, 1)
    c.add_acl("web", 2)
    assert report_luns(c, WEB1) == [0, 1, 2]
    assert report_luns(c, DB1) == [0, 1]
    assert report_luns(c, WEB2) == [0, 1]  # the connection names port 1
    for cdb in (READ10, bytes(6)):
        res = send(c, DB1, 2, cdb)
        assert res.status == Status.CHECK_CONDITION and sense(res) == (0x5, 0x25, 0x00)
    inq = send(c, DB1, 2, INQUIRY)
    assert inq.status == Status.GOOD and inq.data[0] == 0x7F  # qualifier 011b: no unit here
    assert send(c, WEB1, 2, INQUIRY).data[0] & 0x1F == 0x00
    assert send(c, WEB1, 2, READ10).status == Status.GOOD
    assert sense(send(c, DB1, 1, READ10)) == REPORTED_LUNS_CHANGED  # told once, on the units it still sees
    assert send(c, DB1, 1, READ10).status == Status.GOOD  # unit 1 has no ACL: everyone sees it
    assert send(c, DB1, 0, INQUIRY).status == Status.GOOD  # LUN 0 always answers


def test_an_acl_change_tells_the_nexuses_whose_view_changed(c: Controller) -> None:
    settle(c, WEB1, DB1)
    c.add_connection("web", WEB, 1)
    c.add_acl("web", 2)
    assert c.target.pending_unit_attentions(WEB1, 1) == []  # web still sees unit 2
    assert send(c, DB1, 1, bytes(6)).status == Status.CHECK_CONDITION
    assert sense(send(c, DB1, 0, bytes(6))) == REPORTED_LUNS_CHANGED
    c.delete_acl("web", 2)
    assert sense(send(c, DB1, 1, bytes(6))) == REPORTED_LUNS_CHANGED
    assert report_luns(c, DB1) == [0, 1, 2]
    assert c.target.visibility is None  # no ACL left: the hot path asks nothing


def test_access_settings_survive_a_restart(env: Clocked, tmp_path: Path) -> None:
    c = env.open(tmp_path)
    c.add_connection("web", WEB, 1)
    c.add_connection("db", DB)
    c.set_port_access(2, "connections")
    c.add_acl("web", 2)
    c.close()
    c2 = env.open(tmp_path)
    assert c2.connections() == c.connections()
    assert c2.acl() == [{"unit": 2, "connections": ["web"]}]
    assert not c2.access.may_login("iqn.2026-01.test:stranger", 2)
    settle(c2, DB1)
    assert report_luns(c2, DB1) == [0, 1]


def test_bad_input_is_one_line(c: Controller) -> None:
    c.add_connection("web", WEB)
    for call, words in [
        (lambda: c.add_connection("web", DB), "already exists"),
        (lambda: c.add_connection("bad name", DB), "letters"),
        (lambda: c.add_connection("x", "not-an-iqn"), "not an iSCSI name"),
        (lambda: c.add_acl("nobody", 2), "no connection"),
        (lambda: c.add_acl("web", 9), "no unit 9"),
        (lambda: c.delete_acl("web", 2), "no ACL entry"),
    ]:
        with pytest.raises(ControllerError, match=words):
            call()
    c.add_acl("web", 2)
    with pytest.raises(ControllerError, match="delete those ACL entries first"):
        c.delete_connection("web")
    for i in range(ops.MAX_CONNECTIONS - 1):
        c.add_connection(f"h{i}", f"iqn.2026-01.test:h{i}")
    with pytest.raises(ControllerError, match="at most 64"):
        c.add_connection("one-more", DB)
    with pytest.raises(ops.OperationError, match="at most 32 characters"):
        ops.bind("add_connection", ["x" * 33, DB])


def test_deleting_a_unit_takes_its_acl_with_it(c: Controller) -> None:
    c.add_connection("web", WEB)
    c.add_acl("web", 2)
    c.delete_unit(2)
    assert c.acl() == [] and c.target.visibility is None


class Direct:
    """The command language straight onto a controller (the registry's bind, then the method)."""

    def __init__(self, c: Controller) -> None:
        self.c = c

    def operate(self, op: str, /, *args: object, **kwargs: object) -> object:
        row, kw = ops.bind(op, args, kwargs)
        try:
            return getattr(self.c, row.method)(**kw)
        except ControllerError as exc:
            raise CommandError(str(exc)) from None


def test_the_command_language_runs_them(c: Controller) -> None:
    a = Direct(c)
    assert "Connection web added" in run(a, f"ADD CONNECTION web IQN={WEB} PORT=1", ).text  # type: ignore[arg-type]
    run(a, f"add connection db iqn={DB}")  # type: ignore[arg-type]
    run(a, "SET PORT 2 ACCESS=CONNECTIONS")  # type: ignore[arg-type]
    run(a, "ADD ACL CONNECTION=web UNIT=2")  # type: ignore[arg-type]
    text = run(a, "SHOW CONNECTIONS").text  # type: ignore[arg-type]
    assert "CONNECTIONS" in text and WEB in text and "ANY" in text, text
    assert "web" in run(a, "SHOW ACL").text  # type: ignore[arg-type]
    for line, words in [("SET PORT 3 ACCESS=ALL", "outside"), ("SET PORT 1 ACCESS=SOME", "not one of"),
                        ("ADD CONNECTION x", "IQN= missing"), ("ADD CONNECTION x IQN=iqn.2026-01.a:b PORT=9",
                                                               "outside"),
                        ("ADD ACL UNIT=2", "CONNECTION= missing"), ("DELETE CONNECTION", "name missing")]:
        with pytest.raises(CommandError, match=words):
            run(a, line)  # type: ignore[arg-type]
    run(a, "DELETE ACL CONNECTION=web UNIT=2")  # type: ignore[arg-type]
    run(a, "DELETE CONNECTION web")  # type: ignore[arg-type]
    assert "No unit has an ACL" in run(a, "SHOW ACL").text  # type: ignore[arg-type]


def test_a_new_shelf_starts_with_the_connections_of_its_toml(env: Clocked, tmp_path: Path) -> None:
    from msa500_emu.config import ConfigError, load

    cfg = tmp_path / "shelf.toml"
    cfg.write_text(f'[shelf]\nserial = "ACCESS01"\n[[shelf.connections]]\nname = "web"\niqn = "{WEB}"\nport = 1\n'
                   f'[[shelf.connections]]\nname = "db"\niqn = "{DB}"\n')
    spec = load(cfg, {}).shelf
    c = env.open(tmp_path / "state", spec)
    assert [(h["name"], h["port"]) for h in c.connections()["connections"]] == [("web", 1), ("db", None)]
    c.close()
    assert env.open(tmp_path / "state", spec).connections() == c.connections()
    for body, words in [('name = "a b"\niqn = "iqn.2026-01.x:y"', "letters"),
                        ('name = "a"\niqn = "nope"', "not an iSCSI name"),
                        ('name = "a"\niqn = "iqn.2026-01.x:y"\nport = 3', "outside"),
                        ('name = "a"', "name and iqn needed"), ('name = "a"\nip = "x"', "unknown key")]:
        cfg.write_text(f"[shelf]\n[[shelf.connections]]\n{body}\n")
        with pytest.raises(ConfigError, match=words):
            load(cfg, {})


def test_unusable_access_settings_in_nvram_are_refused_in_one_line(env: Clocked, tmp_path: Path) -> None:
    import json

    from firmware_model.controller import ShelfError

    env.open(tmp_path).close()
    path = tmp_path / "controller-nvram.json"
    data = json.loads(path.read_text())
    data["access"] = {"connections": [{"name": "web", "iqn": WEB, "port": 1}], "acl": {"2": ["nobody"]}}
    path.write_text(json.dumps(data))
    with pytest.raises(ShelfError, match=r"access\.acl\.2\[0\] names connection 'nobody', which does not exist"):
        env.open(tmp_path)
