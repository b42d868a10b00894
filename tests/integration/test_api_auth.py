"""The management API's token: who may use the API, and how `ctl` and scripts find the token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.management.auth import record_name
from msa500_emu.testing import PACKAGE_ROOT, RunningArray, start_array


def send(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def user_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-state")


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory, user_state: Path) -> Iterator[RunningArray]:
    """An array whose user state directory (where it records the token for ctl) is a temp dir."""
    d = tmp_path_factory.mktemp("auth")
    arr = start_array(d / "state", env={"XDG_STATE_HOME": str(user_state)})
    yield arr
    assert arr.stop() == 0, arr.log.read_text()


def env_for(user_state: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MSA500_API_TOKEN"}
    return {**env, "XDG_STATE_HOME": str(user_state), "PYTHONPATH": str(PACKAGE_ROOT), **more}


def ctl(api: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", api, *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_no_token_is_401_a_wrong_one_403_the_right_one_200(shelf: RunningArray) -> None:
    status, body = send(shelf.api + "/api/units")
    assert status == 401 and body["ok"] is False and "token" in body["error"], body
    status, body = send(shelf.api + "/api/units", headers={"Authorization": "Bearer not-the-token"})
    assert status == 403 and body["error"] == "wrong API token", body
    status, body = send(shelf.api + "/api/units", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert status == 401, body
    status, units = send(shelf.api + "/api/units", headers=shelf.auth_headers())
    assert status == 200 and any(u["lun"] == 1 for u in units)
    cmd = json.dumps({"command": "SHOW UNITS"}).encode()
    status, body = send(shelf.api + "/api/command", cmd, {"Content-Type": "application/json"})
    assert status == 401, body
    status, body = send(shelf.api + "/api/command", cmd, {"Content-Type": "application/json", **shelf.auth_headers()})
    assert status == 200 and body["ok"], body


def test_refusals_are_logged_once_per_address(shelf: RunningArray) -> None:
    for _ in range(5):
        send(shelf.api + "/api/disks", headers={"Authorization": "Bearer wrong"})
    assert shelf.log.read_text().count("API request from 127.0.0.1 refused") == 1


def test_health_stays_open_and_says_little(shelf: RunningArray) -> None:
    status, body = send(shelf.api + "/api/health")
    assert status == 200 and body["status"] == "ok" and set(body) <= {"status", "powered"}, body


def test_a_post_that_is_not_json_is_415(shelf: RunningArray) -> None:
    status, body = send(shelf.api + "/api/command", b"command=SHOW+UNITS",
                        {"Content-Type": "text/plain", **shelf.auth_headers()})
    assert status == 415 and "application/json" in body["error"], body


def test_a_foreign_origin_is_403_the_own_one_passes(shelf: RunningArray) -> None:
    cmd = json.dumps({"command": "SHOW UNITS"}).encode()
    headers = {"Content-Type": "application/json", **shelf.auth_headers()}
    status, body = send(shelf.api + "/api/command", cmd, {**headers, "Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in body["error"], body
    status, body = send(shelf.api + "/api/command", cmd, {**headers, "Origin": shelf.api})
    assert status == 200 and body["ok"], body


def test_token_file_is_0600_in_the_state_dir_and_named_by_the_banner(shelf: RunningArray, user_state: Path) -> None:
    assert shelf.token_file == shelf.state_dir / "api.token"
    assert stat.S_IMODE(shelf.token_file.stat().st_mode) == 0o600
    assert len(shelf.token or "") >= 40
    record = user_state / "msa500-emu" / "tokens" / record_name("127.0.0.1", shelf.api_port)
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and record.read_text().strip() == shelf.token


def test_ctl_finds_the_token_with_no_flags(shelf: RunningArray, user_state: Path) -> None:
    r = ctl(shelf.api, env_for(user_state), "SHOW", "UNITS")
    assert r.returncode == 0, r.stderr


def test_ctl_token_file_and_env_override_and_a_missing_token_is_one_line(shelf: RunningArray,
                                                                          tmp_path: Path) -> None:
    nowhere = tmp_path / "empty-state"
    r = ctl(shelf.api, env_for(nowhere), "SHOW", "UNITS")
    assert r.returncode == 3 and "no API token" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert shelf.token_file is not None
    r = ctl(shelf.api, env_for(nowhere), "--token-file", str(shelf.token_file), "SHOW", "UNITS")
    assert r.returncode == 0, r.stderr
    r = ctl(shelf.api, env_for(nowhere, MSA500_API_TOKEN=shelf.token or ""), "SHOW", "UNITS")
    assert r.returncode == 0, r.stderr
    r = ctl(shelf.api, env_for(nowhere, MSA500_API_TOKEN="wrong"), "SHOW", "UNITS")
    assert r.returncode == 1 and "wrong API token" in r.stderr, r.stderr
    r = ctl(shelf.api, env_for(nowhere), "--token-file", str(tmp_path / "nope"), "SHOW", "UNITS")
    assert r.returncode == 3 and "does not exist" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_token_is_reused_and_the_file_flag_and_no_auth_work(tmp_path: Path) -> None:
    tf = tmp_path / "my.token"
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    arr = start_array(tmp_path / "state", extra=["--api-token-file", str(tf)], env=env)
    try:
        first = arr.token
        assert arr.token_file == tf and tf.read_text().strip() == first
        arr.restart()
        assert arr.token == first
        assert send(arr.api + "/api/units", headers=arr.auth_headers())[0] == 200
    finally:
        assert arr.stop() == 0
    assert not list((tmp_path / "xdg" / "msa500-emu" / "tokens").iterdir())  # records removed at stop
    open_arr = start_array(tmp_path / "state", extra=["--no-api-auth"], env=env)
    try:
        assert open_arr.token is None
        assert send(open_arr.api + "/api/units")[0] == 200
        assert "API authentication is off" in open_arr.log.read_text()
    finally:
        assert open_arr.stop() == 0


def test_a_token_file_from_the_toml(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "state", '[api]\ntoken_file = "from-toml.token"\n',
                      env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    try:
        assert arr.token_file == tmp_path / "from-toml.token"
        assert stat.S_IMODE(arr.token_file.stat().st_mode) == 0o600
        assert send(arr.api + "/api/disks", headers=arr.auth_headers())[0] == 200
    finally:
        assert arr.stop() == 0
