"""Shared fixtures: a real emulator process on free loopback ports, with temp state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOOLS = ROOT.parent / "shared" / "tools"


@dataclass
class RunningArray:
    proc: subprocess.Popen[str]
    state_dir: Path
    target: str
    port1: int
    port2: int
    api: str
    log: Path

    def url(self, port: int = 1, lun: int = 1) -> str:
        tcp = self.port1 if port == 1 else self.port2
        return f"iscsi://127.0.0.1:{tcp}/{self.target}/{lun}"

    def portal(self, port: int = 1) -> str:
        return f"127.0.0.1:{self.port1 if port == 1 else self.port2}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_array(state_dir: Path, config: Path | None = None, extra: list[str] | None = None) -> RunningArray:
    log = state_dir.parent / f"{state_dir.name}.log"
    cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(state_dir),
           "--port1", "127.0.0.1:0", "--port2", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += extra or []
    logf = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    banner = []
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        if "msa500-emu ctl" in line:
            break
    text = "".join(banner)
    ports = dict(re.findall(r"port (\d): iSCSI portal 127\.0\.0\.1:(\d+)", text))
    target = re.search(r"serving (\S+)", text)
    api = re.search(r"management API: (http://\S+)/api/health", text)
    if not (ports and target and api):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {text}\n{log.read_text()}")
    return RunningArray(proc, state_dir, target.group(1), int(ports["1"]), int(ports["2"]), api.group(1), log)


@pytest.fixture(scope="session")
def array(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    """One emulator for the session's integration tests (default shelf, small LUN 1)."""
    d = tmp_path_factory.mktemp("array")
    cfg = d / "shelf.toml"
    cfg.write_text(
        '[shelf]\nserial = "CITEST0001"\n'
        '[[shelf.logical_drives]]\nlun = 1\nbay = 1\nsize = "1GiB"\nname = "test"\n'
        '[[shelf.logical_drives]]\nlun = 2\nbay = 2\nsize = "64MiB"\nname = "scratch"\n'
    )
    running = start_array(d / "state", cfg)
    yield running
    assert running.stop() == 0, running.log.read_text()


def need(tool: str) -> str:
    import shutil

    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run scripts/setup (Debian packages)")
    return path
