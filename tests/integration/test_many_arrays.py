"""Many arrays at once on one machine: eight emulator processes started in parallel, each on its own
ports, state directory and target name, do not see each other's data, events or faults; and
`msa500-emu fleet up` starts a few from the command line and stops them on SIGTERM."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.testing import start_arrays, stop_arrays
from msa500_emu.testing.fleet import FLEET_FILE
from tests.conftest import ROOT

N = 8
MIB = 1 << 20
DATA = 64 * 1024  # bytes each array gets, at LBA 0 of its LUN 1


def used_bytes(path: Path) -> int:
    """What a state directory really holds on disk (its drive images and cache file are sparse)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


@pytest.mark.slow
def test_eight_arrays_at_once_do_not_interfere(msa500_factory: Any, tmp_path: Path) -> None:
    # Each state dir holds 14 sparse drive images and a 128 MiB cache file (the smallest module
    # the config allows): sparse too, but make sure the worst case of the mirror shelf would fit.
    assert shutil.disk_usage(tmp_path).free > N * 3 * 256 * MIB
    arrays = msa500_factory.many(N)
    assert len({a.api for a in arrays}) == N
    assert len({p for a in arrays for p in (a.port1, a.port2)}) == 2 * N
    assert len({a.target for a in arrays}) == N and len({a.state_dir for a in arrays}) == N
    start = [a.last_event_id() for a in arrays]

    payload = [random.Random(i).randbytes(DATA) for i in range(N)]
    sessions = [a.initiator(port=1) for a in arrays]
    for ini, data in zip(sessions, payload, strict=True):
        ini.write(1, 0, data)
    for i, ini in enumerate(sessions):
        back = ini.read(1, 0, DATA // 512)
        assert back == payload[i], f"array {i + 1} reads back another's data"

    arrays[0].fail_drive(1)
    arrays[0].wait_for_unit_state(1, "interim recovery", timeout=30)
    assert any(e["code"] == "DRIVE_FAILED" for e in arrays[0].events(start[0]))
    for i, a in enumerate(arrays[1:], 1):
        assert a.unit(1)["state"] == "ok", f"array {i + 1}: {a.unit(1)['state']}"
        codes = {e["code"] for e in a.events(start[i])}
        assert "DRIVE_FAILED" not in codes, f"array {i + 1} logged another array's fault"
        assert a.disk(1)["state"] != "failed"
    # the failed array still serves its own data from the surviving mirror
    assert sessions[0].read(1, 0, DATA // 512) == payload[0]
    on_disk = sum(used_bytes(a.state_dir) for a in arrays)
    assert on_disk < N * 256 * MIB, f"{on_disk // MIB} MiB on disk for {N} small shelves"


@pytest.mark.slow
def test_start_arrays_is_all_or_nothing(tmp_path: Path) -> None:
    bad = '[shelf]\nserial = "X"\ndrive_size = "1KiB"\n'
    with pytest.raises(Exception, match=r"1 of 2 arrays did not start: array02"):
        start_arrays(2, tmp_path, lambda i: None if i == 0 else bad)
    again = start_arrays(1, tmp_path)  # array01 was stopped: its state directory is free again
    try:
        assert all(a.alive for a in again)
    finally:
        assert stop_arrays(again) == []


@pytest.mark.slow
def test_fleet_up_prints_each_array_and_stops_on_sigterm(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    proc = subprocess.Popen([sys.executable, "-m", "msa500_emu", "fleet", "up", "3", "--dir", str(fleet)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "arrays up" in line:
                break
        assert lines and "3 arrays up" in lines[-1], "\n".join(lines) + (proc.stderr.read() if proc.poll() else "")
        header, rows = lines[0], lines[1:4]
        assert header.split()[:4] == ["ARRAY", "PORT", "1", "PORT"]
        assert [r.split()[0] for r in rows] == ["array01", "array02", "array03"]
        col = header.index("API")
        assert all(r[col:].startswith("http://127.0.0.1:") for r in rows)
        listed = json.loads((fleet / FLEET_FILE).read_text())
        assert [a["name"] for a in listed] == ["array01", "array02", "array03"]
        for a in listed:
            with urllib.request.urlopen(a["api"] + "/api/health", timeout=10) as resp:
                assert json.loads(resp.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "3 arrays stopped" in out and not (fleet / FLEET_FILE).exists()
    for a in listed:  # stopped means stopped: nothing answers on their APIs any more
        with pytest.raises(OSError):
            urllib.request.urlopen(a["api"] + "/api/health", timeout=5)


def test_fleet_up_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    for args, words in ((["0", "--dir", str(tmp_path)], "N 0: 1..64"),
                        (["2", "--dir", str(tmp_path), "--config", str(tmp_path / "none.toml")], "no such file")):
        p = subprocess.run([sys.executable, "-m", "msa500_emu", "fleet", "up", *args], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
        assert p.returncode == 2 and words in p.stderr and p.stderr.count("\n") == 1, p.stderr


# ------------------------------------------------------------------------------ one array per pod
# No Kubernetes API server here, and kubectl's --dry-run=client still asks one for its schemas
# (kubeconform is on none of the registries this project uses): the manifest is read with PyYAML
# and checked for what Kubernetes would refuse or the emulator would not do.
MANIFEST = ROOT / "deploy" / "msa500-emu.yaml"


def manifest() -> dict[str, dict[str, Any]]:
    import yaml

    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    for d in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(d), d.get("kind")
        assert d["metadata"].get("name"), d["kind"]
    return {d["kind"]: d for d in docs}


def test_the_kubernetes_manifest_is_consistent() -> None:
    objs = manifest()
    assert set(objs) == {"Service", "StatefulSet"}
    svc, sts = objs["Service"], objs["StatefulSet"]
    assert (svc["apiVersion"], sts["apiVersion"]) == ("v1", "apps/v1")
    spec = sts["spec"]
    assert {"selector", "serviceName", "template", "replicas"} <= set(spec)
    assert spec["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert {"name", "image"} <= set(c) and "hostNetwork" not in pod
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports)
    env = {e["name"]: e["value"] for e in c["env"]}
    from msa500_emu.config import parse_endpoint

    for var, name in (("MSA500_PORT1", "iscsi-port1"), ("MSA500_PORT2", "iscsi-port2"), ("MSA500_API", "api")):
        assert parse_endpoint(env[var], var).port == ports[name], var
    for probe in ("livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/api/health" and get["port"] in ports, probe
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {t["metadata"]["name"]: t for t in spec["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert set(mounts) <= set(volumes) | set(claims)
    state = next(n for n in mounts if n in claims)
    assert mounts[state] == env["MSA500_STATE_DIR"] and claims[state]["spec"]["accessModes"] == ["ReadWriteOnce"]
    args = c["args"]
    assert args[0] == "serve"
    token_file = Path(args[args.index("--api-token-file") + 1])
    secret_mount = next(n for n, v in volumes.items() if "secret" in v)
    assert token_file.parent == Path(mounts[secret_mount])
    items = volumes[secret_mount]["secret"]["items"]
    assert [i["path"] for i in items] == [token_file.name]
    # the pod runs as the image's user, and its state volume is that user's
    uid = int(re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1))  # type: ignore[union-attr]
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["fsGroup"] == uid


@pytest.mark.slow
def test_the_pods_command_line_serves_with_the_secrets_token_and_answers_the_probe(tmp_path: Path) -> None:
    """The container's arguments and environment, as the manifest gives them (loopback addresses
    for the pod's): the token file from the Secret is used as given, and the probe path answers."""
    c = manifest()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    secret = tmp_path / "token"
    secret.write_text("k8s-secret-token-0123456789abcdef\n")
    args = [str(secret) if a.startswith("/etc/") else a for a in c["args"]]
    env = {**os.environ, **{e["name"]: e["value"] for e in c["env"]}, "MSA500_STATE_DIR": str(tmp_path / "state"),
           "MSA500_PORT1": "127.0.0.1:0", "MSA500_PORT2": "127.0.0.1:0", "MSA500_API": "127.0.0.1:0",
           "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "msa500_emu", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    try:
        assert proc.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "msa500-emu ctl" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            banner += line
        api = re.search(r"management API: (http://\S+)/api/health", banner)
        assert api, banner
        with urllib.request.urlopen(api.group(1) + c["livenessProbe"]["httpGet"]["path"], timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        req = urllib.request.Request(api.group(1) + "/api/command", data=b'{"command": "SHOW GLOBALS"}',
                                     headers={"Authorization": "Bearer k8s-secret-token-0123456789abcdef",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["ok"] is True
        assert secret.read_text() == "k8s-secret-token-0123456789abcdef\n"  # read, never rewritten
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
