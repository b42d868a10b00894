"""Starting an emulated MSA500 for a test: as a child process or on a thread of the test process.

`start_array()` starts one on free loopback ports with its own state directory, either as a
`python -m msa500_emu serve` child process (`mode="subprocess"`, what a CI job runs) or on an
event loop in a background thread of the test process (`mode="inprocess"`, faster to start).
Both give the same handle (`MSA500`, in `handle.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from .errors import MSA500Error, StartError
from .handle import MSA500
from .sessions import LOOPBACK

if TYPE_CHECKING:
    from ..server import Emulator

T = TypeVar("T")

#: What `config=` accepts: None (the built-in default shelf), TOML text, or a TOML file.
ConfigSource = str | os.PathLike[str] | None

MODES = ("subprocess", "inprocess")
#: The directory that holds the msa500_emu and firmware_model packages this code runs from.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def mirror_shelf(serial: str = "TESTSHELF1", drive_size: str = "256MiB", size: str = "32MiB") -> str:
    """TOML of a small shelf: bays 1-2 a RAID 1 array "A" holding LUN 1 of `size` (starts in a second)."""
    return (f'[shelf]\nserial = "{serial}"\ndrive_size = "{drive_size}"\n'
            f'[[shelf.arrays]]\nname = "A"\nbays = [1, 2]\n'
            f'[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "1"\nsize = "{size}"\n')


# --------------------------------------------------------------------- subprocess mode
class RunningArray(MSA500):
    """The emulator as a child process (`python -m msa500_emu serve`); `proc` is the Popen."""

    mode = "subprocess"

    def __init__(self, state_dir: Path, config: Path | None, log: Path, extra: Sequence[str] = (),
                 env: dict[str, str] | None = None, *, startup_timeout: float = 30.0) -> None:
        super().__init__(state_dir, config, log, startup_timeout=startup_timeout)
        self.extra = list(extra)
        self.env = env
        self.proc: subprocess.Popen[str] | None = None  # set by _start (start_array never returns without)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(self.state_dir),
               "--port1", f"{LOOPBACK}:{port1}", "--port2", f"{LOOPBACK}:{port2}", "--api", f"{LOOPBACK}:{api}"]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.extra
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        # The child runs the code this module came from, whatever the current directory holds.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        if self.proc is not None and self.proc.stdout is not None:  # a restart: the old pipe is done
            self.proc.stdout.close()
        with open(self.log, "a" if append_log else "w") as logf:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True, cwd=PACKAGE_ROOT, env=env)
        self.proc = proc
        assert proc.stdout is not None
        banner: list[str] = []
        done = threading.Event()

        def read_banner() -> None:  # readline blocks: a thread keeps the startup timeout honest
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, ""):
                banner.append(line)
                if "msa500-emu ctl" in line:
                    break
            done.set()

        threading.Thread(target=read_banner, name="msa500-banner", daemon=True).start()
        done.wait(self.startup_timeout)
        text = "".join(banner)
        ports = dict(re.findall(r"port (\d): iSCSI portal 127\.0\.0\.1:(\d+)", text))
        target = re.search(r"serving (\S+)", text)
        api_url = re.search(r"management API: (http://\S+)/api/health", text)
        if not (done.is_set() and ports and target and api_url):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise StartError(f"msa500-emu did not start (exit {proc.returncode}): {text}\n{self.log_tail()}")
        self.target = target.group(1)
        self.port1, self.port2 = int(ports["1"]), int(ports["2"])
        self.api = api_url.group(1)
        token_file = re.search(r"API token: (.+?) \(send ", text)
        self.token_file = Path(token_file.group(1)) if token_file else None
        self.token = self.token_file.read_text().strip() if self.token_file else None

    def _stop(self) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash (no flush; the cache file must carry acknowledged writes)."""
        self.close_sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------- in-process mode
class _ThreadFilter(logging.Filter):
    def __init__(self, ident: int | None) -> None:
        super().__init__()
        self.ident = ident

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


_LOGGERS = ("msa500_emu", "firmware_model")
_log_lock = threading.Lock()
_log_users = 0
_log_levels_set: list[str] = []


def _acquire_loggers(level: str) -> None:
    """In-process arrays log through `logging`: open the emulator's loggers at its level (once)."""
    global _log_users
    with _log_lock:
        _log_users += 1
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(level.upper())
                _log_levels_set.append(name)


def _release_loggers() -> None:
    global _log_users
    with _log_lock:
        _log_users -= 1
        if _log_users <= 0:
            _log_users = 0
            for name in _log_levels_set:
                logging.getLogger(name).setLevel(logging.NOTSET)
            _log_levels_set.clear()


class InProcessArray(MSA500):
    """The emulator on its own event loop in a background thread of the test process.

    `emulator` is the `msa500_emu.server.Emulator`; it is not thread-safe: reach into it with
    `call(fn, ...)`, which runs fn on the emulator's loop.
    """

    mode = "inprocess"

    def __init__(self, state_dir: Path, config: Path | None, log: Path, *, startup_timeout: float = 30.0) -> None:
        super().__init__(state_dir, config, log, startup_timeout=startup_timeout)
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handler: logging.Handler | None = None

    @property
    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and self.emulator is not None
                and self.emulator.shelf is not None)

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        from ..config import ConfigError, load
        from ..server import Emulator

        try:
            settings = load(self.config, {
                "state_dir": str(self.state_dir), "port1": f"{LOOPBACK}:{port1}",
                "port2": f"{LOOPBACK}:{port2}", "api": f"{LOOPBACK}:{api}",
            })
        except ConfigError as exc:
            raise StartError(f"msa500-emu configuration error: {exc}") from exc
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=f"msa500-{self.state_dir.name}",
                                  daemon=True)
        thread.start()
        handler = logging.FileHandler(self.log, mode="a" if append_log else "w")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_ThreadFilter(thread.ident))
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(handler)
        _acquire_loggers(settings.log_level)
        self._loop, self._thread, self._handler = loop, thread, handler

        async def start() -> Emulator:
            emulator = Emulator(settings)
            await emulator.start()
            logging.getLogger("msa500_emu").info("in-process array started:\n%s", emulator.banner())
            return emulator

        try:
            self.emulator = asyncio.run_coroutine_threadsafe(start(), loop).result(self.startup_timeout)
        except BaseException as exc:
            self._shutdown_loop()
            if isinstance(exc, Exception):
                raise StartError(f"msa500-emu did not start in-process: {exc}\n{self.log_tail()}") from exc
            raise
        em = self.emulator
        assert em is not None and em.shelf is not None
        by_port = {p.info.port: p.info.tcp_port for p in em.portals}
        self.target = em.shelf.identity.target_name
        self.port1, self.port2 = by_port[1], by_port[2]
        self.api = f"http://{LOOPBACK}:{em.api_port}"
        self.token, self.token_file = em.api_auth.token, em.api_auth.path

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run fn(*args, **kwargs) on the emulator's event loop (e.g. reading the controller)."""
        if self._loop is None or not self.alive:
            raise MSA500Error("the in-process array is not running")

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def _shutdown_loop(self) -> None:
        loop, thread, handler = self._loop, self._thread, self._handler
        self._loop = self._thread = self._handler = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
        if handler is not None:
            for name in _LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
            _release_loggers()

    def _stop(self) -> int:
        emulator, loop = self.emulator, self._loop
        self.emulator = None
        rc = 0
        if emulator is not None and loop is not None and loop.is_running():

            async def stop() -> None:
                # Python 3.11's asyncio.wait_for swallows a cancel that meets a completed wait
                # (an event woke the timer task that very moment), and Emulator.stop() cancels
                # its timer task once: cancel it until it is really done, then stop.
                ticker = getattr(emulator, "_ticker", None)
                while isinstance(ticker, asyncio.Task) and not ticker.done():
                    ticker.cancel()
                    await asyncio.wait({ticker}, timeout=0.2)
                await emulator.stop()

            try:
                asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
            except Exception:
                logging.getLogger("msa500_emu").exception("in-process array did not stop cleanly")
                rc = 1
        self._shutdown_loop()
        return rc


# ------------------------------------------------------------------------------ starting
def _config_path(config: ConfigSource, state_dir: Path) -> Path | None:
    """None, a TOML file, or TOML text (written beside the state directory)."""
    if config is None:
        return None
    if isinstance(config, str):
        if "\n" not in config and "=" not in config and config.strip().endswith(".toml"):
            return Path(config).resolve()  # a file name given as a string
        path = state_dir.parent / f"{state_dir.name}.toml"
        path.write_text(config)
        return path
    return Path(config).resolve()


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: Literal["subprocess"] = "subprocess", log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> RunningArray: ...


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: Literal["inprocess"], log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> InProcessArray: ...


@overload
def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: str, log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> MSA500: ...


def start_array(state_dir: str | os.PathLike[str], config: ConfigSource = None, extra: Sequence[str] | None = None,
                *, mode: str = "subprocess", log: Path | None = None,
                startup_timeout: float = 30.0, env: dict[str, str] | None = None) -> MSA500:
    """Start an emulated MSA500 on free loopback ports (two iSCSI portals and the API).

    state_dir: the shelf's state (drive images, NVRAM); created if missing, reused if it holds
    a shelf. config: None (the built-in default shelf), TOML text, or a TOML file path. The log
    goes to `log` or `<state_dir>.log` beside the state directory. `extra` are more `serve`
    arguments and `env` more environment variables (subprocess mode only).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    sd = Path(state_dir).resolve()
    sd.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config_path(config, sd)
    log_path = Path(log).resolve() if log is not None else sd.parent / f"{sd.name}.log"
    array: MSA500
    if mode == "subprocess":
        array = RunningArray(sd, cfg, log_path, extra or (), env, startup_timeout=startup_timeout)
    else:
        if extra or env:
            raise ValueError("extra= and env= are for mode='subprocess' (in-process settings come from config=)")
        array = InProcessArray(sd, cfg, log_path, startup_timeout=startup_timeout)
    array._start(0, 0, 0, False)
    return array
