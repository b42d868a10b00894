"""`lab timeline --html`: the failover as swim lanes, from a timeline.jsonl, and no raw @@ marker anywhere.

lab_timeline.jsonl beside this file is a recorded lab run (kill-primary, restore, hang-then-wake),
with one synthetic record added: the client's count of the writes the fenced primary refused
(as tests/integration/test_lab.py records it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from msa500_emu.lab import markers, timeline_html
from msa500_emu.lab.rso_lab import format_mark

FIXTURE = Path(__file__).with_name("lab_timeline.jsonl")
VOID = {"meta", "br", "hr", "img", "input", "link"}
SVG = "{http://www.w3.org/2000/svg}"


def records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


class Checker(HTMLParser):
    """Every element closed, in order; the text collected (what a reader sees, tooltips included)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page() -> str:
    return timeline_html.render(records())


def test_the_page_is_well_formed_html_and_xml(page: str) -> None:
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    root = ET.fromstring(page.split("\n", 1)[1])  # after <!DOCTYPE html>
    assert root.tag == "html" and root.find(f".//{SVG}svg") is not None


def test_it_is_self_contained(page: str) -> None:
    checker = Checker()
    checker.feed(page)
    fetched = [(tag, a) for tag, a in checker.tags if tag in ("script", "link", "img", "iframe")
               or any(k in a for k in ("src", "href", "xlink:href"))]
    assert not fetched and "@import" not in page and "url(" not in page


def test_four_lanes_with_their_events(page: str) -> None:
    checker = Checker()
    checker.feed(page)
    lanes = [a["data-lane"] for tag, a in checker.tags if tag == "g" and "data-lane" in a]
    assert lanes == ["primary", "array", "recovery", "client"]
    pic = timeline_html.facts(records())
    by_lane = {lane: [e.text for e in pic.events if e.lane == lane] for lane in timeline_html.LANES}
    assert "primary VM killed (power cut)" in by_lane["primary"]
    assert any(t.startswith("array: RSO_FAILOVER") for t in by_lane["array"])
    assert "logical drive attached to the recovery VM" in by_lane["recovery"]
    assert "service unreachable" in by_lane["client"]


def test_deadline_fence_boot_and_outage_are_marked(page: str) -> None:
    pic = timeline_html.facts(records())
    assert len(pic.failovers) == 2
    first = pic.failovers[0]
    assert first.fence == pytest.approx(1796140021.815)
    assert first.deadline == pytest.approx(1796140021.815 - 0.006954)  # detection_ms before the fence
    assert first.last_heartbeat == pytest.approx(first.deadline - 5.0)  # the RSO timeout before that
    assert first.boot == pytest.approx(1796140021.9391818) and first.service == pytest.approx(1796140025.2531877)
    assert pic.outages[0].start == pytest.approx(1796140017.2131917)
    assert pic.outages[0].end == pytest.approx(1796140025.4280448)
    checker = Checker()
    checker.feed(page)
    marks = [a["data-mark"] for tag, a in checker.tags if tag == "g" and "data-mark" in a]
    for mark in ("deadline", "fence", "boot", "outage", "silence"):
        assert mark in marks, mark
    assert marks.count("fence") == 2 and marks.count("deadline") == 2


def test_the_refused_writes_are_counted(page: str) -> None:
    assert timeline_html.facts(records()).refused_writes == 14
    checker = Checker()
    checker.feed(page)
    counted = [a["data-refused-writes"] for _, a in checker.tags if "data-refused-writes" in a]
    assert counted == ["14"]
    more = [*records(), {"t": 1796140054.7, "event": "client: writes to the fenced primary", "refused_writes": 3}]
    assert timeline_html.facts(more).refused_writes == 17
    assert timeline_html.facts(records()[:20]).refused_writes is None
    assert "not recorded" in timeline_html.render(records()[:20])


def test_no_raw_guest_marker_reaches_the_page_or_the_text_timeline(page: str) -> None:
    recs = records()
    assert sum("@@" in r["event"] for r in recs) > 30  # the fixture is full of them
    assert "@@" not in page
    t0 = recs[0]["t"]
    lines = [format_mark(r, t0) for r in recs]
    assert not [line for line in lines if "@@" in line]
    assert "recovery: pre-boot monitor exits 0: the primary is fenced, the boot goes on" in "\n".join(lines)
    assert markers.plain("            @@FSCK exit=0 t=26.34").strip() == "file system clean (e2fsck exit 0)"


def test_lab_timeline_html_writes_the_file(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    (lab_dir / "timeline.jsonl").write_text(FIXTURE.read_text())
    (lab_dir / "failover.txt").write_text("failover timeline\n            @@FSCK exit=0 t=26.34\n")
    out_file = tmp_path / "run.html"
    run = [sys.executable, "-m", "msa500_emu", "lab", "--lab-dir", str(lab_dir), "timeline"]
    done = subprocess.run([*run, "--html", str(out_file)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 failover(s)" in done.stdout and out_file.read_text().startswith("<!DOCTYPE html>")
    text = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert text.returncode == 0 and "@@" not in text.stdout and "file system clean" in text.stdout
    bad = subprocess.run([*run, "--html", str(tmp_path / "no" / "such" / "dir.html")], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_an_empty_timeline_still_draws() -> None:
    checker = Checker()
    checker.feed(timeline_html.render([]))
    assert checker.stack == []
