"""`GET /metrics` of a real emulator process: behind the token, parsed by prometheus-client's parser,
its counters moving by exactly the I/O a host ran over iSCSI, a failed drive in the drive state."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msa500_emu.testing import RunningArray, mirror_shelf, start_array

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def arr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    d = tmp_path_factory.mktemp("metrics")
    running = start_array(d / "state", mirror_shelf(serial="METRICS01"), env={"XDG_STATE_HOME": str(d / "xdg")})
    yield running
    assert running.stop() == 0, running.log_tail()


def fetch(arr: RunningArray, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, content type and body of GET /metrics."""
    req = urllib.request.Request(arr.api + "/metrics", headers=arr.auth_headers() if headers is None else headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def scrape(arr: RunningArray) -> Samples:
    status, ctype, body = fetch(arr)
    assert status == 200 and ctype.startswith("text/plain"), body
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How far a counter moved (one not yet exposed before, such as a first op label, was 0)."""
    return value(after, name, **labels) - before.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_the_token(arr: RunningArray) -> None:
    status, ctype, body = fetch(arr, headers={})
    assert status == 401 and "token" in body and ctype.startswith("application/json"), body
    status, _, body = fetch(arr, headers={"Authorization": "Bearer not-the-token"})
    assert status == 403, body
    assert fetch(arr)[0] == 200


def test_counters_move_by_the_io_run_over_iscsi(arr: RunningArray) -> None:
    ini = arr.initiator(port=1, clear=[1])
    before = scrape(arr)
    assert value(before, "msa500_port_sessions", port="1") == 1
    chunk = bytes(range(256)) * 256  # 64 KiB
    for i in range(3):
        ini.write(1, i * 128, chunk)
    assert ini.read(1, 0, 256) == chunk * 2  # 128 KiB back
    after = scrape(arr)
    assert delta(before, after, "msa500_lun_write_bytes_total", lun="1") == 3 * 65536
    assert delta(before, after, "msa500_lun_read_bytes_total", lun="1") == 131072
    assert delta(before, after, "msa500_lun_commands_total", lun="1", op="WRITE(16)") == 3
    assert delta(before, after, "msa500_lun_commands_total", lun="1", op="READ(16)") == 1
    assert delta(before, after, "msa500_lun_command_seconds_count", lun="1") == 4
    assert delta(before, after, "msa500_lun_command_seconds_sum", lun="1") > 0
    assert delta(before, after, "msa500_port_commands_total", port="1") == 4
    assert delta(before, after, "msa500_port_commands_total", port="2") == 0
    assert value(after, "msa500_cache_dirty_bytes") >= 0 and value(after, "msa500_shelf_powered") == 1
    ini.logout()
    ini.close()
    deadline = time.monotonic() + 10
    while value(scrape(arr), "msa500_port_sessions", port="1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value(scrape(arr), "msa500_port_sessions", port="1") == 0


def test_openmetrics_when_asked(arr: RunningArray) -> None:
    status, ctype, body = fetch(arr, {**arr.auth_headers(), "Accept": "application/openmetrics-text"})
    assert status == 200 and ctype.startswith("application/openmetrics-text") and body.endswith("# EOF\n")


def test_a_failed_drive_shows_in_the_drive_state(arr: RunningArray) -> None:
    s = scrape(arr)
    assert value(s, "msa500_drive_state", bay="2", state="ok") == 1
    arr.fail_drive(2)
    s = scrape(arr)
    assert value(s, "msa500_drive_state", bay="2", state="failed") == 1
    assert value(s, "msa500_drive_state", bay="2", state="ok") == 0
    assert value(s, "msa500_unit_state", lun="1", state="interim recovery") == 1
