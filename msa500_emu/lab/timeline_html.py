"""`lab timeline --html FILE`: the lab's run as swim lanes, one self-contained HTML page.

Four lanes (the primary, the array, the recovery, the client), each record of timeline.jsonl a
dot in its lane, and what a failover is made of marked across them: the heartbeat deadline, the
fence, the recovery's boot from the shared drive, the client's outage, and the writes the fenced
primary refused (records carrying `refused_writes`). Inline SVG and CSS only: no script, no CDN,
so the file opens anywhere and can be attached to a report. The page is well-formed XML as well
as HTML, and no raw guest marker (@@...) reaches it (markers.plain).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import markers

LANES = ("primary", "array", "recovery", "client")
LANE_TITLES = {"primary": "primary", "array": "array", "recovery": "recovery", "client": "client"}
LEFT, PLOT_W, AXIS_H, ROW_H, LANE_PAD, MAX_ROWS = 90, 1100, 48, 14, 10, 8
CHAR_W = 6.0  # px per character of the 11 px label font, for placing labels without overlap
TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


@dataclass
class Event:
    t: float
    lane: str
    label: str  # short, on the picture
    text: str  # in full, in the tooltip and the table
    detail: str


@dataclass
class Failover:
    fence: float
    forced: bool
    deadline: float | None = None
    last_heartbeat: float | None = None
    boot: float | None = None  # the shared drive attached to the recovery: it boots from it
    service: float | None = None  # the service up on the recovery


@dataclass
class Outage:
    start: float
    end: float | None  # None: still unreachable when the record ends


@dataclass
class Picture:
    t0: float
    t1: float
    events: list[Event] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    refused_writes: int | None = None  # None: no record counted them


def lane_of(rec: Mapping[str, Any]) -> str:
    """Whose lane a record is in: its own `lane`, else by the words it starts with."""
    lane = rec.get("lane")
    if lane in LANES:
        return str(lane)
    e = str(rec.get("event", ""))
    if e.startswith("primary"):
        return "primary"
    if e.startswith(("recovery", "F8")) or "recovery VM" in e:
        return "recovery"
    if e.startswith(("service", "client")):
        return "client"
    return "array"


def _label(text: str, width: int = 44) -> str:
    m = re.match(r"array: ([A-Z_]+)\b", text)
    if m:
        return m.group(1)
    short = re.sub(r"^(primary|recovery|client): ", "", text)
    return short if len(short) <= width else short[: width - 3] + "..."


def _detail(rec: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {markers.plain(str(v))}" for k, v in rec.items() if k not in ("t", "event", "lane"))


def _timeout_before(records: list[Mapping[str, Any]], t: float) -> float | None:
    timeout = None
    for r in records:
        if float(r["t"]) > t:
            break
        if isinstance(r.get("timeout_s"), int | float):
            timeout = float(r["timeout_s"])
        m = re.search(r"RSO_TIMEOUT .*for (\d+(?:\.\d+)?) s", str(r.get("event", "")))
        if m:
            timeout = float(m.group(1))
    return timeout


def facts(records: Iterable[Mapping[str, Any]]) -> Picture:
    """What the picture shows, from the records of timeline.jsonl (any order)."""
    recs = sorted((r for r in records if isinstance(r.get("t"), int | float)), key=lambda r: float(r["t"]))
    if not recs:
        return Picture(0.0, 1.0)
    pic = Picture(float(recs[0]["t"]), max(float(recs[-1]["t"]), float(recs[0]["t"]) + 1.0))
    refused: list[int] = []
    for r in recs:
        t, raw = float(r["t"]), str(r.get("event", ""))
        text = markers.plain(raw)
        if raw != "failover summary":
            pic.events.append(Event(t, lane_of(r), _label(text), text, _detail(r)))
        if isinstance(r.get("refused_writes"), int) and not isinstance(r.get("refused_writes"), bool):
            refused.append(int(r["refused_writes"]))
        if "RSO_FAILOVER" in raw:
            f = Failover(t, forced=not isinstance(r.get("detection_ms"), int | float))
            timeout = _timeout_before(recs, t)
            if not f.forced:
                f.deadline = t - float(r["detection_ms"]) / 1000
                if timeout is not None:
                    f.last_heartbeat = f.deadline - timeout
            pic.failovers.append(f)
        elif pic.failovers and pic.failovers[-1].boot is None and raw.startswith("logical drive attached to the rec"):
            pic.failovers[-1].boot = t
        elif pic.failovers and pic.failovers[-1].service is None and raw.startswith("recovery: @@SERVICE up"):
            pic.failovers[-1].service = t
        if raw == "service unreachable" and not (pic.outages and pic.outages[-1].end is None):
            pic.outages.append(Outage(t, None))
        elif raw in ("service back", "service answered by another host") and pic.outages and not pic.outages[-1].end:
            pic.outages[-1].end = t
    pic.refused_writes = sum(refused) if refused else None
    return pic


# -- drawing --------------------------------------------------------------------------------------
def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _secs(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def _stamp(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


class _Svg:
    def __init__(self, pic: Picture) -> None:
        self.pic = pic
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        p = self.pic
        return round(LEFT + (t - p.t0) / (p.t1 - p.t0) * PLOT_W, 1)

    def add(self, text: str) -> None:
        self.parts.append(text)


def _place(events: list[Event], svg: _Svg) -> dict[str, list[tuple[Event, int, bool]]]:
    """Each event's label row in its lane (and whether it reads leftwards, near the right edge), so
    labels never run into each other; a label with no free row is left out (its dot's tooltip has it)."""
    placed: dict[str, list[tuple[Event, int, bool]]] = {lane: [] for lane in LANES}
    ends: dict[str, list[float]] = {lane: [] for lane in LANES}
    for e in events:
        x = svg.x(e.t)
        w = len(e.label) * CHAR_W + 8
        left = x + w > LEFT + PLOT_W + 20
        start, end = (x - w, x) if left else (x, x + w)
        rows = ends[e.lane]
        row = next((i for i, last in enumerate(rows) if last < start), None)
        if row is None and len(rows) < MAX_ROWS:
            rows.append(0.0)
            row = len(rows) - 1
        if row is None:
            placed[e.lane].append((e, -1, left))
            continue
        rows[row] = end
        placed[e.lane].append((e, row, left))
    return placed


def _svg(pic: Picture) -> str:
    svg = _Svg(pic)
    placed = _place(pic.events, svg)
    tops: dict[str, float] = {}
    y = float(AXIS_H)
    for lane in LANES:
        tops[lane] = y
        rows = max((row for _, row, _ in placed[lane]), default=0) + 1
        y += LANE_PAD * 2 + 12 + rows * ROW_H
    height = y + 10
    width = LEFT + PLOT_W + 30
    span = pic.t1 - pic.t0
    step = next((s for s in TICKS if span / s <= 14), TICKS[-1])
    svg.add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
            f'viewBox="0 0 {width} {height:.0f}" role="img" aria-label="failover timeline">')
    for lane in LANES:  # lane backgrounds and names
        h = (tops[LANES[LANES.index(lane) + 1]] if lane != LANES[-1] else y) - tops[lane]
        svg.add(f'<g class="lane" data-lane="{lane}"><rect class="lane-bg {lane}" x="0" y="{tops[lane]:.0f}" '
                f'width="{width}" height="{h:.0f}"/><text class="lane-name" x="8" y="{tops[lane] + 22:.0f}">'
                f'{_esc(LANE_TITLES[lane])}</text></g>')
    n = 0
    while n * step <= span + 1e-9:  # the time axis: seconds from the first record
        tx = svg.x(pic.t0 + n * step)
        svg.add(f'<line class="tick" x1="{tx}" y1="{AXIS_H - 6}" x2="{tx}" y2="{height - 10:.0f}"/>'
                f'<text class="tick-label" x="{tx}" y="{AXIS_H - 12}">+{n * step:g} s</text>')
        n += 1

    def band(mark: str, lane: str, a: float, b: float, label: str, title: str) -> None:
        x1, x2 = svg.x(a), svg.x(b)
        top = tops[lane] + 4
        svg.add(f'<g data-mark="{mark}"><title>{_esc(title)}</title><rect class="band {mark}" x="{x1}" '
                f'y="{top:.0f}" width="{max(2.0, x2 - x1):.1f}" height="12"/><text class="band-label" '
                f'x="{x1 + 3}" y="{top + 10:.0f}">{_esc(label)}</text></g>')

    def rule(mark: str, t: float, label: str, title: str, leftwards: bool = False) -> None:
        rx = svg.x(t)
        tx, anchor = (rx - 3, "end") if leftwards else (rx + 3, "start")
        svg.add(f'<g data-mark="{mark}"><title>{_esc(title)}</title><line class="rule {mark}" x1="{rx}" '
                f'y1="6" x2="{rx}" y2="{height - 10:.0f}"/><text class="rule-label {mark}" '
                f'x="{tx}" y="14" text-anchor="{anchor}">{_esc(label)}</text></g>')

    for f in pic.failovers:
        if f.last_heartbeat is not None and f.deadline is not None:
            band("silence", "primary", f.last_heartbeat, f.deadline,
                 f"no heartbeat {_secs(f.deadline - f.last_heartbeat)}",
                 f"last heartbeat {_stamp(f.last_heartbeat)}, deadline {_stamp(f.deadline)}")
        if f.deadline is not None:
            rule("deadline", f.deadline, "heartbeat deadline", f"heartbeat deadline {_stamp(f.deadline)}", True)
        rule("fence", f.fence, "fence" + (" (forced)" if f.forced else ""),
             f"fence {_stamp(f.fence)}: port 1 fenced, port 2 active")
        if f.boot is not None:
            end = f.service if f.service is not None else pic.t1
            band("boot", "recovery", f.boot, end,
                 f"boot {_secs(end - f.boot)}" if f.service is not None else "boot (no service yet)",
                 f"the recovery boots from the shared drive at {_stamp(f.boot)}"
                 + (f", service up at {_stamp(f.service)}" if f.service is not None else ""))
    for o in pic.outages:
        end = o.end if o.end is not None else pic.t1
        band("outage", "client", o.start, end,
             f"outage {_secs(end - o.start)}" if o.end is not None else "unreachable at the end",
             f"service unreachable from {_stamp(o.start)}" + (f" to {_stamp(o.end)}" if o.end else ""))
    for lane in LANES:  # the events, above the bands
        for e, row, left in placed[lane]:
            ex = svg.x(e.t)
            ey = tops[lane] + LANE_PAD + 18 + max(row, 0) * ROW_H
            text = "" if row < 0 else (
                f'<text class="label" x="{ex - 5 if left else ex + 5}" y="{ey:.0f}" '
                f'text-anchor="{"end" if left else "start"}">{_esc(e.label)}</text>')
            svg.add(f'<g class="event"><title>{_esc(_stamp(e.t))}  {_esc(e.text)}'
                    f'{_esc("  (" + e.detail + ")") if e.detail else ""}</title>'
                    f'<circle class="dot {lane}" cx="{ex}" cy="{ey - 4:.0f}" r="3"/>{text}</g>')
    if pic.refused_writes is not None:
        svg.add(f'<text class="refused" data-refused-writes="{pic.refused_writes}" x="{LEFT}" '
                f'y="{tops["primary"] + 14:.0f}">writes the fenced primary refused: {pic.refused_writes}</text>')
    svg.add("</svg>")
    return "\n".join(svg.parts)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } table { border-collapse: collapse; font-size: 12px; }
td, th { padding: 2px 8px; text-align: left; vertical-align: top; } tr:nth-child(even) { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; } dt { font-weight: 600; }
.lane-bg.primary { fill: #eef3fb; } .lane-bg.array { fill: #f7f7f7; } .lane-bg.recovery { fill: #eef8ef; }
.lane-bg.client { fill: #fbf3ea; } .lane-name { font: 600 13px sans-serif; fill: #444; }
.tick { stroke: #ddd; } .tick-label { font: 10px sans-serif; fill: #777; text-anchor: middle; }
.label, .band-label, .rule-label { font: 11px sans-serif; fill: #333; }
.dot.primary { fill: #2b6cb0; } .dot.array { fill: #555; }
.dot.recovery { fill: #2f855a; } .dot.client { fill: #c05621; }
.rule.fence { stroke: #c53030; stroke-width: 2; } .rule.deadline { stroke: #dd6b20; stroke-dasharray: 5 3; }
.rule-label.fence { fill: #c53030; } .rule-label.deadline { fill: #dd6b20; }
.band.silence { fill: #cbd5e0; } .band.boot { fill: #9ae6b4; } .band.outage { fill: #feb2b2; }
.refused { font: 600 12px sans-serif; fill: #c53030; }
"""


def render(records: Iterable[Mapping[str, Any]], title: str = "RSO lab: failover timeline") -> str:
    """The whole page (UTF-8 text)."""
    recs = list(records)
    pic = facts(recs)
    summary: list[tuple[str, str]] = [
        ("run", f"{_stamp(pic.t0)} to {_stamp(pic.t1)} ({_secs(pic.t1 - pic.t0)}, {len(pic.events)} events)")]
    for i, f in enumerate(pic.failovers, 1):
        parts = [f"fence at +{_secs(f.fence - pic.t0)}" + (" (forced)" if f.forced else "")]
        if f.deadline is not None:
            parts.append(f"{(f.fence - f.deadline) * 1000:.1f} ms after the heartbeat deadline")
        if f.service is not None:
            parts.append(f"service on the recovery {_secs(f.service - f.fence)} after the fence")
        summary.append((f"failover {i}", ", ".join(parts)))
    for i, o in enumerate(pic.outages, 1):
        summary.append((f"outage {i}", f"+{_secs(o.start - pic.t0)}, " + (
            _secs(o.end - o.start) if o.end is not None else "not over when the record ends")))
    summary.append(("writes the fenced primary refused",
                    "not recorded" if pic.refused_writes is None else str(pic.refused_writes)))
    rows = "\n".join(
        f'<tr><td>{_esc(_stamp(e.t))}</td><td class="num">+{e.t - pic.t0:.3f} s</td><td>{_esc(e.lane)}</td>'
        f"<td>{_esc(e.text)}</td><td>{_esc(e.detail)}</td></tr>" for e in pic.events)
    dl = "\n".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in summary)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>{_esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<dl class="summary">
{dl}
</dl>
<div class="lanes">
{_svg(pic)}
</div>
<p>Rules: the heartbeat deadline (dashed) and the fence (solid); bands: the primary's silence before the
deadline, the recovery's boot from the shared drive to its service, the client's outage.</p>
<table>
<thead><tr><th>time</th><th>since start</th><th>lane</th><th>event</th><th>detail</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
