"""The dispatcher: the event loop hands notices over without waiting; one task per sink sends them.

`send(notice)` is synchronous and only puts the notice in each sink's bounded queue (a full queue
drops it and counts it, logged once until the queue drains), so a slow or dead receiver never
holds up host I/O or the controller. Each sink's task sends one notice at a time under a timeout;
a failure is counted and reported once, then at most once a minute with the count, and once when
the sink works again. `close()` lets the queues drain for a moment, then stops the tasks and
closes the sinks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .table import Notice

log = logging.getLogger("msa500_emu.alerting")

QUEUE_LIMIT = 1000
SEND_TIMEOUT_S = 10.0
REPORT_EVERY_S = 60.0
DRAIN_S = 2.0


class Sink(Protocol):
    kind: str

    @property
    def name(self) -> str: ...

    async def send(self, notice: Notice) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Counts:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_error: str = ""
    last_error_time: float | None = None


@dataclass
class _Worker:
    sink: Sink
    queue: asyncio.Queue[Notice]
    counts: Counts = field(default_factory=Counts)
    task: asyncio.Task[None] | None = None
    failing: bool = False
    reported_at: float = 0.0
    unreported: int = 0
    full_told: bool = False
    busy: bool = False  # a send is under way


def _accepts(sink: Sink, notice: Notice) -> bool:
    return sink.kind != "snmp" or notice.route.trap is not None  # SNMP: only codes with a trap


class Dispatcher:
    def __init__(self, queue_limit: int = QUEUE_LIMIT, send_timeout: float = SEND_TIMEOUT_S) -> None:
        self.queue_limit = queue_limit
        self.send_timeout = send_timeout
        self._workers: list[_Worker] = []
        self._running = False
        self._cleanup: list[asyncio.Task[None]] = []

    # -- the event loop's side ------------------------------------------------------------
    def send(self, notice: Notice) -> None:
        """Queue the notice for every sink that takes it; never blocks, never raises."""
        for w in self._workers:
            if not _accepts(w.sink, notice):
                continue
            try:
                w.queue.put_nowait(notice)
            except asyncio.QueueFull:
                w.counts.dropped += 1
                if not w.full_told:
                    w.full_told = True
                    log.warning("alert sink %s: %d alerts waiting, dropping new ones (told once until it catches up)",
                                w.sink.name, self.queue_limit)

    # -- sinks --------------------------------------------------------------------------
    @property
    def sinks(self) -> list[tuple[Sink, Counts]]:
        return [(w.sink, w.counts) for w in self._workers]

    async def start(self) -> None:
        self._running = True
        for w in self._workers:
            self._spawn(w)

    def _spawn(self, w: _Worker) -> None:
        if self._running and w.task is None:
            w.task = asyncio.get_running_loop().create_task(self._run(w), name=f"alerts {w.sink.name}")

    def replace(self, sinks: Iterable[Sink]) -> None:
        """Serve `sinks` from now on: one already served goes on with its queue and counts; the
        others stop (what they still had queued is dropped) in a task `close` waits for."""
        by_id = {id(w.sink): w for w in self._workers}
        workers = [by_id.get(id(s)) or _Worker(s, asyncio.Queue(self.queue_limit)) for s in sinks]
        keep = {id(w) for w in workers}
        old = [w for w in self._workers if id(w) not in keep]
        self._workers = workers
        for w in workers:
            self._spawn(w)
        if old and self._running:
            self._cleanup.append(asyncio.get_running_loop().create_task(self._stop(old, 0.0)))

    async def close(self, drain: float = DRAIN_S) -> None:
        self._running = False
        workers, self._workers = self._workers, []
        await self._stop(workers, drain)
        while self._cleanup:
            await self._cleanup.pop()

    async def _stop(self, workers: list[_Worker], drain: float) -> None:
        if drain > 0 and workers:
            deadline = time.monotonic() + drain
            while any(w.queue.qsize() or w.busy for w in workers if w.task is not None) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        for w in workers:
            if w.task is not None:
                w.task.cancel()
        for w in workers:
            if w.task is not None:
                try:
                    await w.task
                except asyncio.CancelledError:
                    pass
                w.task = None
            try:
                await w.sink.close()
            except Exception as exc:  # closing a broken sink: nothing more to do
                log.debug("closing alert sink %s: %s", w.sink.name, exc)

    # -- one sink's task ----------------------------------------------------------------
    async def _run(self, w: _Worker) -> None:
        while True:
            notice = await w.queue.get()
            w.busy = True
            try:
                async with asyncio.timeout(self.send_timeout):
                    await w.sink.send(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a receiver that is down, refuses, or is slow: count, tell, go on
                self._failed(w, exc)
            else:
                w.counts.sent += 1
                if w.failing:
                    w.failing = False
                    log.warning("alert sink %s works again (%d alerts failed before)", w.sink.name, w.counts.failed)
            finally:
                w.busy = False
                w.queue.task_done()
            if w.full_told and w.queue.qsize() < self.queue_limit // 2:
                w.full_told = False

    def _failed(self, w: _Worker, exc: BaseException) -> None:
        why = "no answer within the timeout" if isinstance(exc, TimeoutError) else \
            " ".join(str(exc).split()) or type(exc).__name__
        w.counts.failed += 1
        w.counts.last_error, w.counts.last_error_time = why, time.time()
        now = time.monotonic()
        if not w.failing:
            w.failing, w.reported_at, w.unreported = True, now, 0
            log.error("alert sink %s failed: %s (told again at most once a minute)", w.sink.name, why)
        elif now - w.reported_at >= REPORT_EVERY_S:
            log.error("alert sink %s still failing: %s (%d more failures)", w.sink.name, why, w.unreported + 1)
            w.reported_at, w.unreported = now, 0
        else:
            w.unreported += 1
