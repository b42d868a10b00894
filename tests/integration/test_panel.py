"""The front panel (GET /) and the event stream of a real emulator: the token cookie, server-sent
events from a fault, resume, and the page in headless Chromium following the shelf without a reload."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorError
from msa500_emu.testing import RunningArray, start_array
from msa500_emu.testing.sessions import LOOPBACK, login

from ..conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
WAIT_S = 15.0  # generous bound on every wait
HOST_IQN = "iqn.2026-12.org.msa500-emu.testing:panel-host"
RSO_TIMEOUT_S = 2.0
SHELF = """
[shelf]
serial = "PANELTEST1"
drive_sizes = ["256MiB", "256MiB", "256MiB", "256MiB", "256MiB", "256MiB", "256MiB", "256MiB",
               "empty", "empty", "empty", "empty", "empty", "empty"]
[[shelf.arrays]]
name = "A"
bays = [1, 2]
[[shelf.arrays]]
name = "B"
bays = [3, 4, 5]
[[shelf.logical_drives]]
lun = 1
array = "A"
raid = "1"
size = "16MiB"
name = "boot"
[[shelf.logical_drives]]
lun = 2
array = "B"
raid = "5"
size = "16MiB"
name = "data"
"""


def start(tmp: Path) -> RunningArray:
    cfg = tmp / "panel.toml"
    cfg.write_text(SHELF)
    return start_array(tmp / "state", cfg)


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    arr = start(tmp_path_factory.mktemp("panel"))
    yield arr
    assert arr.stop() == 0, arr.log.read_text()


def request(arr: RunningArray, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(arr.api)
    conn = http.client.HTTPConnection(u.hostname or LOOPBACK, u.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def cookie_of(arr: RunningArray) -> str:
    status, headers, _ = request(arr, "GET", f"/?token={arr.token}")
    assert status == 302, headers
    return headers["set-cookie"].split(";")[0]


# ------------------------------------------------------------------ the token, once, into a cookie
def test_the_token_in_the_url_becomes_a_strict_httponly_cookie(shelf: RunningArray) -> None:
    status, headers, _ = request(shelf, "GET", f"/?token={shelf.token}")
    assert status == 302 and headers["location"] == "/", headers
    cookie = headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
    assert "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict" and attrs["path"] == "Path=/"
    assert cookie.split(";")[0].split("=", 1)[1] == shelf.token
    status, _, page = request(shelf, "GET", "/", headers={"Cookie": cookie.split(";")[0]})
    assert status == 200 and b'id="bays"' in page


def test_no_token_shows_the_form_a_wrong_one_403(shelf: RunningArray) -> None:
    status, headers, page = request(shelf, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'name="token"' in page
    assert "set-cookie" not in headers
    status, headers, page = request(shelf, "GET", "/?token=not-the-token")
    assert status == 403 and b'name="token"' in page and b"not this array" in page and "set-cookie" not in headers
    status, _, page = request(shelf, "GET", "/", headers={"Cookie": f"{cookie_of(shelf).split('=')[0]}=stale"})
    assert status == 403 and b'name="token"' in page
    status, _, script = request(shelf, "GET", "/static/panel.js")  # the page's files are open
    assert status == 200 and b"EventSource" in script
    assert request(shelf, "GET", "/static/nothing.js")[0] in (401, 404)


def test_the_cookie_opens_the_api_and_the_post_rules_still_hold(shelf: RunningArray) -> None:
    cookie = cookie_of(shelf)
    status, _, body = request(shelf, "GET", "/api/globals", headers={"Cookie": cookie})
    assert status == 200 and json.loads(body)["serial"] == "PANELTEST1"
    name = cookie.split("=")[0]
    status, _, body = request(shelf, "GET", "/api/globals", headers={"Cookie": f"{name}=wrong"})
    assert status == 403 and json.loads(body)["ok"] is False
    cmd = json.dumps({"command": "SHOW UNITS"}).encode()
    status, _, body = request(shelf, "POST", "/api/command", cmd,
                              {"Cookie": cookie, "Content-Type": "application/json", "Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in json.loads(body)["error"]
    status, _, body = request(shelf, "POST", "/api/command", cmd, {"Cookie": cookie, "Content-Type": "text/plain"})
    assert status == 415, body
    own = f"http://{urlsplit(shelf.api).netloc}"
    status, _, body = request(shelf, "POST", "/api/command", cmd,
                              {"Cookie": cookie, "Content-Type": "application/json", "Origin": own})
    assert status == 200 and json.loads(body)["ok"] is True


# ------------------------------------------------------------------ server-sent events
async def sse_events(resp: aiohttp.ClientResponse, until: str | None = None, count: int | None = None,
                     timeout: float = WAIT_S) -> list[dict[str, Any]]:
    """Events of an open stream until one has code `until` or `count` came (bounded by `timeout`)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode()
            if not line:
                return out
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if (until is not None and out[-1]["code"] == until) or (count is not None and len(out) >= count):
                    return out


async def test_a_drive_failure_reaches_the_stream_within_a_second(shelf: RunningArray) -> None:
    async with aiohttp.ClientSession(headers=shelf.auth_headers()) as http:
        resp = await http.get(shelf.api + f"/api/events/stream?since={shelf.last_event_id()}")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0.2)  # let the stream settle before the fault
        t0 = time.monotonic()
        await asyncio.to_thread(shelf.fail_drive, 6)
        got = await sse_events(resp, until="DRIVE_FAILED")
        latency = time.monotonic() - t0
        resp.close()
    failed = got[-1]
    assert failed["code"] == "DRIVE_FAILED" and failed["bay"] == 6 and failed["severity"] == "critical"
    print(f"DRIVE_FAILED on the stream {latency * 1000:.1f} ms after the FAULT command was sent")
    assert latency < 5.0  # generous: the issue's own bar is a second, measured and printed above


async def test_last_event_id_gives_exactly_the_missed_events_and_power_on_is_told(shelf: RunningArray) -> None:
    start_id = shelf.last_event_id()
    await asyncio.to_thread(shelf.fault, "DISK7", "LATENCY", "5")
    await asyncio.to_thread(shelf.fault, "DISK7", "CLEAR")
    missed = shelf.events(start_id)
    assert len(missed) >= 2
    async with aiohttp.ClientSession(headers=shelf.auth_headers()) as http:
        resp = await http.get(shelf.api + "/api/events/stream", headers={"Last-Event-ID": str(start_id)})
        got = await sse_events(resp, count=len(missed))
        assert [e["id"] for e in got] == [e["id"] for e in missed] and got == missed
        await asyncio.to_thread(shelf.power_off)
        await asyncio.to_thread(shelf.power_on)
        live = await sse_events(resp, until="SHELF_POWER_ON")
        resp.close()
    assert [e["code"] for e in live][-1] == "SHELF_POWER_ON" and "SHELF_POWER_OFF" in [e["code"] for e in live]
    assert all(b["id"] == a["id"] + 1 for a, b in zip([*got, *live], [*got, *live][1:], strict=False))


def test_the_stream_needs_the_token(shelf: RunningArray) -> None:
    status, headers, body = request(shelf, "GET", "/api/events/stream")
    assert status == 401 and json.loads(body)["ok"] is False and "text/event-stream" not in headers["content-type"]
    status, _, _ = request(shelf, "GET", "/api/events/stream", headers={"Authorization": "Bearer wrong"})
    assert status == 403


def write_when_ready(ini: Initiator, lba: int, data: bytes) -> None:
    """A FUA write to LUN 1, retried while the drives spin up (NOT READY after a power-on)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            ini.write(1, lba, data, fua=True)
            return
        except InitiatorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_drive_io_counters_move_with_host_io(shelf: RunningArray) -> None:
    before = {d["bay"]: d["io_writes"] for d in shelf.disks() if "io_writes" in d}
    ini = login(LOOPBACK, shelf.port1, shelf.target, HOST_IQN + "-io", clear=(1,))
    try:
        write_when_ready(ini, 0, bytes(range(256)) * 16)
    finally:
        ini.close()
    after = {d["bay"]: d["io_writes"] for d in shelf.disks() if "io_writes" in d}
    assert after[1] > before[1] and after[2] > before[2]  # both halves of the RAID 1 mirror
    assert after[8] == before[8]  # an unassigned drive saw none


def test_without_auth_the_page_opens_and_stop_ends_open_streams(tmp_path: Path) -> None:
    """--no-api-auth: no form; and an emulator stops cleanly while a client holds a stream open."""
    cfg = tmp_path / "panel.toml"
    cfg.write_text(SHELF)
    arr = start_array(tmp_path / "state", cfg, extra=["--no-api-auth"])
    try:
        status, _, page = request(arr, "GET", "/")
        assert status == 200 and b'id="bays"' in page
        u = urlsplit(arr.api)
        conn = http.client.HTTPConnection(u.hostname or LOOPBACK, u.port, timeout=10)
        conn.request("GET", "/api/events/stream?since=0")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"retry:")
    finally:
        code = arr.stop()  # a SIGTERM; the open stream must not hold the shutdown (else a kill, not 0)
    assert code == 0, arr.log_tail()
    resp.read()  # http.client raises IncompleteRead if the stream was cut rather than ended
    conn.close()


# ------------------------------------------------------------------ the page in Chromium
@pytest.fixture
def browser_shelf(tmp_path: Path) -> Iterator[RunningArray]:
    arr = start(tmp_path)
    yield arr
    assert arr.stop() == 0, arr.log.read_text()


@pytest.mark.slow
def test_the_page_follows_the_shelf_without_a_reload(browser_shelf: RunningArray) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/setup (Debian chromium)")
    arr = browser_shelf
    ms = int(WAIT_S * 1000)
    host = login(LOOPBACK, arr.port1, arr.target, HOST_IQN, clear=(1,))
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1050})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{arr.api}/?token={arr.token}")
                assert page.url.rstrip("/") == arr.api, "the token did not leave the address bar"
                page.wait_for_selector('.bay[data-bay="1"][data-state="ok"]', timeout=ms)
                assert page.locator(".bay[data-bay]").count() == 14
                states = page.eval_on_selector_all(".bay[data-bay]", "els => els.map(e => e.dataset.state)")
                assert states == ["ok"] * 8 + ["empty"] * 6, states
                page.wait_for_selector('tr[data-lun="2"][data-state="ok"]', timeout=ms)
                assert page.locator('tr[data-lun="1"]').get_attribute("data-state") == "ok"
                page.wait_for_selector(f'.port[data-port="1"] li:text("{HOST_IQN}")', timeout=ms)
                page.wait_for_selector("#link-badge:text('events: live')", timeout=ms)

                # host I/O blinks the activity LEDs of the drives it reaches (bays 1 and 2: LUN 1's mirror)
                page.evaluate("""() => { window.blinked = new Set();
                    new MutationObserver(ms => ms.forEach(m => { if (m.target.classList.contains('on'))
                        window.blinked.add(m.target.closest('.bay').dataset.bay); }))
                    .observe(document.getElementById('bays'), {subtree: true, attributes: true,
                                                               attributeFilter: ['class']}); }""")
                deadline = time.monotonic() + WAIT_S
                while time.monotonic() < deadline and not page.evaluate("window.blinked.has('1')"):
                    write_when_ready(host, 64, bytes(4096))
                    page.wait_for_timeout(150)
                assert page.evaluate("window.blinked.has('1')") and not page.evaluate("window.blinked.has('8')")

                # a drive failed through the API, as ctl does: its bay turns failed without a reload
                page.evaluate("window.notReloaded = true")
                arr.fail_drive(4)
                page.wait_for_selector('.bay[data-bay="4"][data-state="failed"]', timeout=ms)
                page.wait_for_selector('#events li[data-code="DRIVE_FAILED"]', timeout=ms)
                page.wait_for_selector('tr[data-lun="2"]:not([data-state="ok"])', timeout=ms)
                assert page.evaluate("window.notReloaded") is True

                # the page's own pull button
                page.click('.bay[data-bay="8"] button[data-action="pull"]')
                page.wait_for_selector('.bay[data-bay="8"][data-state="empty"], '
                                       '.bay[data-bay="8"][data-state="missing"]', timeout=ms)
                assert any(e["code"] == "DRIVE_PULLED" and e["bay"] == 8 for e in arr.events())
                page.wait_for_selector("#status:text('FAULT DISK8 PULL')", timeout=ms)

                # the RSO story: heartbeats and acks, the deadline missed, failover; restore; the page's forced failover
                arr.rso_enable(timeout=RSO_TIMEOUT_S)
                with arr.heartbeating(RSO_TIMEOUT_S / 4, acknowledge=True):
                    page.wait_for_selector('#rso[data-state]:not([data-state="notConfigured"])', timeout=ms)
                    page.wait_for_function("document.querySelectorAll('#lanes line[stroke=\"#3ccf4e\"]').length >= 3",
                                           timeout=ms)
                arr.wait_for_failover(WAIT_S, as_recovery=True)
                page.wait_for_selector('.port[data-port="1"][data-role="fenced"]', timeout=ms)
                page.wait_for_selector('#lanes text:text("deadline missed")', timeout=ms)
                page.wait_for_selector('#lanes text:text("failover")', timeout=ms)
                arr.rso_restore()
                page.wait_for_selector('.port[data-port="1"][data-role="active"]', timeout=ms)
                page.wait_for_selector('#lanes text:text("restore")', timeout=ms)
                page.click('button[data-command="RSO FAILOVER"]')
                page.wait_for_selector('.port[data-port="1"][data-role="fenced"]', timeout=ms)
                page.wait_for_selector('.port[data-port="2"][data-role="active"]', timeout=ms)
                page.wait_for_timeout(300)  # one more poll: the picture as it stands

                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "panel.png"), full_page=True)

                # the shelf's power from the page: shown as off, then back (the stream says so)
                page.click('button[data-command="FAULT SHELF POWER-OFF"]')
                page.wait_for_selector('#shelf[data-powered="false"]', timeout=ms)
                assert page.text_content("#power-badge") == "POWERED OFF"
                page.screenshot(path=str(ARTIFACTS / "panel-powered-off.png"))
                page.click('button[data-command="FAULT SHELF POWER-ON"]')
                page.wait_for_selector('#shelf[data-powered="true"]', timeout=ms)
                page.wait_for_selector('#events li[data-code="SHELF_POWER_ON"]', timeout=ms)
                assert page.evaluate("window.notReloaded") is True
                assert not errors, errors
            finally:
                browser.close()
    finally:
        try:
            host.logout()
        except (OSError, InitiatorError):
            host.close()
