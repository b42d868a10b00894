"""The management API's read-only views and its answers to bad requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..conftest import RunningArray


def get(arr: RunningArray, path: str) -> tuple[int, Any]:
    try:
        req = urllib.request.Request(arr.api + path, headers=arr.auth_headers())
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_views_list_the_shelf(array: RunningArray) -> None:
    status, disks = get(array, "/api/disks")
    assert status == 200 and len(disks) == 14 and {d["bay"] for d in disks} == set(range(1, 15))
    status, units = get(array, "/api/units")
    assert status == 200 and any(u["lun"] == 1 for u in units)
    status, spares = get(array, "/api/spares")
    assert status == 200 and isinstance(spares, list)
    status, g = get(array, "/api/globals")
    assert status == 200 and g["target_name"] == array.target


def test_events_since_an_id(array: RunningArray) -> None:
    status, events = get(array, "/api/events?since=0")
    assert status == 200 and events and events[0]["code"]
    last = events[-1]["id"]
    status, later = get(array, f"/api/events?since={last}")
    assert status == 200 and all(e["id"] > last for e in later)
    status, body = get(array, "/api/events?since=yesterday")
    assert status == 400 and "since" in body["error"]
