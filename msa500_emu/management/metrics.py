"""`GET /metrics`: the shelf in the Prometheus text format, read from the firmware at scrape time.

The data path only bumps plain ints (firmware_model.scsi.stats); this collector turns them, and
the controller's views, into metric families when Prometheus asks. Each emulator owns its own
registry (never prometheus_client's global one: tests run several emulators in one process).
The path is behind the API token like every other (auth.py); docs/metrics.md lists the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from firmware_model.battery import BatteryState
from firmware_model.cache import BLOCK
from firmware_model.controller import PORT_COUNT, UnitState
from firmware_model.enclosure import DriveState
from firmware_model.rso import RsoState
from firmware_model.scsi.stats import LATENCY_BUCKETS_S, TargetStats

if TYPE_CHECKING:
    from firmware_model.controller import Controller
    from firmware_model.controller.views import GlobalsView

    from ..iscsi.node import TargetNode

PATH = "/metrics"
EMPTY_BAY = "empty"  # SHOW DISKS' state of a bay without a drive (views.py)
DRIVE_STATES: tuple[str, ...] = (*(s.value for s in DriveState), EMPTY_BAY)
_LE = (*(floatToGoString(b) for b in LATENCY_BUCKETS_S), "+Inf")
_POWERED = ("msa500_shelf_powered", "1 while the shelf has power (FAULT SHELF POWER-OFF: 0)")


def _states(name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], str]],
            states: Iterable[str]) -> GaugeMetricFamily:
    """An enum as gauges: one series per state, 1 for the current one (alert on `{state="failed"} == 1`)."""
    known = tuple(states)
    g = GaugeMetricFamily(name, doc, labels=[*labels, "state"])
    for values, current in rows:
        for st in (known if current in known else (*known, current)):
            g.add_metric([*values, st], 1.0 if st == current else 0.0)
    return g


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class ShelfCollector(Collector):
    """Every metric of one emulator; `shelf` and `node` are asked at each scrape (None: not running)."""

    def __init__(self, shelf: Callable[[], Controller | None],
                 node: Callable[[], TargetNode | None] = lambda: None) -> None:
        self.shelf = shelf
        self.node = node

    def collect(self) -> Iterator[Metric]:
        c = self.shelf()
        if c is None:
            yield _gauge(*_POWERED, 0.0)
            return
        g = c.describe()
        yield from self._luns(c.target.stats)
        yield from self._ports(c.target.stats, g["rso"])
        yield from self._cache(c, g["cache"])
        yield from self._units(c)
        yield from self._shelf(g)
        yield from self._rso(g["rso"])

    # ------------------------------------------------------------ host I/O
    @staticmethod
    def _luns(stats: TargetStats) -> Iterator[Metric]:
        rd = CounterMetricFamily("msa500_lun_read_bytes", "Data-in bytes of commands that completed GOOD",
                                 labels=["lun"])
        wr = CounterMetricFamily("msa500_lun_write_bytes", "Data-out bytes of commands that completed GOOD",
                                 labels=["lun"])
        cmds = CounterMetricFamily("msa500_lun_commands", "SCSI commands executed, by catalog command name",
                                   labels=["lun", "op"])
        lat = HistogramMetricFamily("msa500_lun_command_seconds",
                                    "iSCSI command latency, command PDU to response", labels=["lun"])
        for lun, s in sorted(stats.luns.items()):
            label = str(lun)
            rd.add_metric([label], s.read_bytes)
            wr.add_metric([label], s.write_bytes)
            for op, n in sorted(s.commands.items()):
                cmds.add_metric([label, op], n)
            lat.add_metric([label], list(zip(_LE, s.cumulative(), strict=True)), s.latency_sum_ns / 1e9)
        yield from (rd, wr, cmds, lat)

    def _ports(self, stats: TargetStats, rso: dict[str, Any]) -> Iterator[Metric]:
        ports = range(1, PORT_COUNT + 1)
        node = self.node()
        sessions = GaugeMetricFamily("msa500_port_sessions", "iSCSI sessions logged in through the port",
                                     labels=["port"])
        for p in ports:
            n = sum(1 for s in node.sessions.values() if s.portal.port == p) if node is not None else 0
            sessions.add_metric([str(p)], n)
        commands = CounterMetricFamily("msa500_port_commands", "SCSI commands executed through the port",
                                       labels=["port"])
        for p in sorted({*ports, *stats.port_commands}):
            commands.add_metric([str(p)], stats.port_commands.get(p, 0))
        links = GaugeMetricFamily("msa500_port_link_up", "1 while the port's link is up (FAULT LINK)",
                                  labels=["port"])
        for p, state in sorted(rso.get("links", {}).items()):
            links.add_metric([str(p)], 1.0 if state == "up" else 0.0)
        yield from (sessions, commands, links)

    # ------------------------------------------------------------ array accelerator
    @staticmethod
    def _cache(c: Controller, s: dict[str, Any]) -> Iterator[Metric]:
        cache = c.cache
        yield _gauge("msa500_cache_size_bytes", "Size of the array accelerator", s["size_bytes"])
        yield _gauge("msa500_cache_dirty_bytes", "Written data not yet on the drives", s["dirty_bytes"])
        yield _gauge("msa500_cache_dirty_limit_bytes", "Dirty data the cache holds at most", s["dirty_limit_bytes"])
        yield _gauge("msa500_cache_write_back", "1 in write-back, 0 in write-through", s["state"] == "write-back")
        yield _counter("msa500_cache_read_bytes", "Bytes read through the cache", cache.read_blocks * BLOCK)
        yield _counter("msa500_cache_read_hit_bytes", "Bytes read that the cache held",
                       cache.read_hit_blocks * BLOCK)
        yield _counter("msa500_cache_write_bytes", "Bytes written through the cache", cache.write_blocks * BLOCK)
        yield _counter("msa500_cache_write_hit_bytes", "Bytes written over data the cache held",
                       cache.write_hit_blocks * BLOCK)
        yield _gauge("msa500_cache_read_hit_ratio", "Read hits over reads since start (0 before any read)",
                     s["read_hit_rate"])
        yield _counter("msa500_cache_destaged_bytes", "Bytes written from the cache to the drives",
                       s["destaged_bytes"])
        yield _counter("msa500_cache_destage_writes", "Destage writes to the drives", s["destage_writes"])

    # ------------------------------------------------------------ units and drives
    @staticmethod
    def _units(c: Controller) -> Iterator[Metric]:
        units = c.units()
        yield _states("msa500_unit_state", "Logical drive state (1 for the current state)", ["lun"],
                      (([str(u["lun"])], u["state"]) for u in units), (s.value for s in UnitState))
        rebuild = GaugeMetricFamily("msa500_unit_rebuild_progress_ratio", "Rebuild done, 0-1 (while rebuilding)",
                                    labels=["lun"])
        expand = GaugeMetricFamily("msa500_unit_expand_progress_ratio", "Expansion done, 0-1 (while expanding)",
                                   labels=["lun"])
        size = GaugeMetricFamily("msa500_unit_size_bytes", "Capacity of the logical drive", labels=["lun"])
        lost = GaugeMetricFamily("msa500_unit_lost_blocks", "Blocks whose data is lost (they answer a medium "
                                 "error until rewritten)", labels=["lun"])
        for u in units:
            lun = [str(u["lun"])]
            if u["rebuild_percent"] is not None:
                rebuild.add_metric(lun, u["rebuild_percent"] / 100)
            if u["expand_percent"] is not None:
                expand.add_metric(lun, u["expand_percent"] / 100)
            size.add_metric(lun, u["size_bytes"])
            lost.add_metric(lun, u["lost_blocks"])
        yield from (rebuild, expand, size, lost)
        yield _states("msa500_drive_state", "Drive state of each bay (1 for the current state)", ["bay"],
                      (([str(d["bay"])], d["state"]) for d in c.disks()), DRIVE_STATES)

    # ------------------------------------------------------------ enclosure, battery, power
    @staticmethod
    def _shelf(g: GlobalsView) -> Iterator[Metric]:
        yield _gauge(*_POWERED, bool(g["powered"]))
        yield _gauge("msa500_temperature_celsius", "Enclosure temperature", g["temperature_c"])
        for name, what, states in (("msa500_power_supply_ok", "psu", g["power_supplies"]),
                                   ("msa500_fan_ok", "fan", g["fans"])):
            m = GaugeMetricFamily(name, f"1 while the {what} works", labels=[what])
            for i, st in enumerate(states, 1):
                m.add_metric([str(i)], 1.0 if st == "ok" else 0.0)
            yield m
        b = g["battery"]
        yield _states("msa500_battery_state", "Cache battery state (1 for the current state)", [],
                      [([], b["state"])], (s.value for s in BatteryState))
        charge = GaugeMetricFamily("msa500_battery_charge_ratio", "Cache battery charge, 0-1 (absent when the "
                                   "battery is failed or missing)")
        if b["charge_percent"] is not None:
            charge.add_metric([], b["charge_percent"] / 100)
        yield charge
        yield _gauge("msa500_battery_holdup_seconds", "How long the battery keeps the cache now",
                     b["holdup_seconds"])

    @staticmethod
    def _rso(r: dict[str, Any]) -> Iterator[Metric]:
        yield _states("msa500_rso_state", "Recovery Server Option state (1 for the current state)", [],
                      [([], r["state"])], (s.value for s in RsoState))
        age = GaugeMetricFamily("msa500_rso_heartbeat_age_seconds", "Since the primary's last heartbeat "
                                "(absent before the first)")
        if r["heartbeat_age_s"] is not None:
            age.add_metric([], r["heartbeat_age_s"])
        yield age
        yield _counter("msa500_rso_heartbeats", "Heartbeats received from the primary", r["heartbeats"])
        yield _counter("msa500_rso_failovers", "Failovers to the recovery server", r["failovers"])
        yield _gauge("msa500_rso_active_port", "The port hosts use now (2 after a failover)", r["active_port"])


def registry_for(collector: Collector) -> CollectorRegistry:
    """A registry of our own holding `collector` alone."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def add_routes(app: web.Application, array: object) -> None:
    """`GET /metrics` on the API app of `array` (the Emulator: its `shelf` and `node`)."""
    registry = registry_for(ShelfCollector(lambda: getattr(array, "shelf", None), lambda: getattr(array, "node", None)))

    async def get_metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    app.router.add_get(PATH, get_metrics)
