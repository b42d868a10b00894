"""The Docker image end to end: scripts/docker-smoke lints the Dockerfile, builds the image on a local
stand-in base, runs it with host networking on loopback and attaches iscsi-ls and qemu-io to both portals."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "docker-smoke"
ENGINE_CANNOT_RUN = 77  # the script's status when no Docker engine can run on this machine, and only then
TIMEOUT_S = 900


def test_docker_image_smoke() -> None:
    # Own session: on a timeout the whole group gets SIGTERM, so the script's trap removes its containers
    # and stops the dockerd it started (which runs in a session of its own).
    proc = subprocess.Popen([str(SCRIPT)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"scripts/docker-smoke did not finish within {TIMEOUT_S} s:\n{out}")
    if proc.returncode == ENGINE_CANNOT_RUN:
        reason = re.findall(r"^docker-smoke: SKIP: (.+)$", out, re.MULTILINE)
        assert reason, f"exit {ENGINE_CANNOT_RUN} without a SKIP line:\n{out}"
        pytest.skip(f"no Docker engine can run here: {reason[-1]}")
    assert proc.returncode == 0, f"scripts/docker-smoke exited {proc.returncode}:\n{out}"
    assert "RESULT: PASS" in out, out
