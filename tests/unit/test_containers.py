"""msa500_emu.testing.containers without an engine: the container's command is one `serve` accepts,
ports are free, the token is handed over through the state directory, and a missing engine is one
clear StartError (the real container runs in scripts/docker-smoke, step 8)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from msa500_emu import cli
from msa500_emu.config import parse_endpoint
from msa500_emu.management.auth import TOKEN_FILE, read_token
from msa500_emu.testing import StartError
from msa500_emu.testing.containers import (
    CONTAINER_CONFIG,
    CONTAINER_STATE_DIR,
    DEFAULT_IMAGE,
    IMAGE_ENV,
    ContainerArray,
    engine_unavailable,
    free_ports,
    image_name,
    serve_args,
    serve_env,
    start_container,
)

NO_ENGINE = "unix:///nonexistent/msa500-test/docker.sock"


def test_the_command_is_one_serve_accepts() -> None:
    args = serve_args(3301, 3302, 3303, True, ["--log-level", "debug"])
    ns = cli._parser().parse_args(args)
    assert ns.command == "serve"
    assert str(ns.state_dir) == CONTAINER_STATE_DIR and str(ns.config) == CONTAINER_CONFIG
    assert (ns.port1, ns.port2, ns.api) == ("127.0.0.1:3301", "127.0.0.1:3302", "127.0.0.1:3303")
    assert ns.log_level == "debug"
    assert "--config" not in serve_args(1, 2, 3, False)


def test_the_environment_names_the_same_loopback_endpoints() -> None:
    env = serve_env(3301, 3302, 3303)
    for key, port in (("MSA500_PORT1", 3301), ("MSA500_PORT2", 3302), ("MSA500_API", 3303)):
        ep = parse_endpoint(env[key], key)
        assert (ep.host, ep.port) == ("127.0.0.1", port)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_the_image_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_ENV, raising=False)
    assert image_name() == DEFAULT_IMAGE
    monkeypatch.setenv(IMAGE_ENV, "registry.example/msa500-emu:1")
    assert image_name() == "registry.example/msa500-emu:1"
    assert image_name("mine:2") == "mine:2"


def test_a_token_passed_in_is_left_in_the_state_directory(tmp_path: Path) -> None:
    arr = ContainerArray(tmp_path / "state", None, tmp_path / "state.log", token="s3cret-token\n")
    path = tmp_path / "state" / TOKEN_FILE
    assert arr.token_file == path
    assert read_token(path) == "s3cret-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not arr.alive and arr.stop() == 0  # never started: nothing to stop


def test_no_engine_is_one_clear_start_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("testcontainers")
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    why = engine_unavailable()
    assert why is not None and "does not answer" in why
    with pytest.raises(StartError) as info:
        start_container(tmp_path / "state", "[shelf]\nserial = \"CONT000001\"\n", image="msa500-emu:none")
    message = str(info.value)
    assert message.startswith("cannot start a container of msa500-emu:none: ") and "\n" not in message
    assert (tmp_path / "state.toml").read_text().startswith("[shelf]")  # the shelf it would have mounted


def test_the_plugin_runs_the_msa500_fixture_in_container_mode(tmp_path: Path) -> None:
    """--msa500-mode container reaches start_container (here: no engine, so the fixture errors with its reason)."""
    pytest.importorskip("testcontainers")
    (tmp_path / "test_uses_it.py").write_text("def test_uses_the_array(msa500):\n    msa500.units()\n")
    env = {**os.environ, "DOCKER_HOST": NO_ENGINE}
    env.pop(IMAGE_ENV, None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--msa500-mode", "container",
                          "test_uses_it.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert "msa500-emu: arrays in container mode" in out.stdout, out.stdout
    assert "cannot start a container of msa500-emu:test: " in out.stdout, out.stdout
    assert out.returncode == 1 and "1 error" in out.stdout, out.stdout
