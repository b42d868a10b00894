"""The emulator in its Docker image, through testcontainers-python: the same `MSA500` handle the
plugin's other modes give, for tests that want the shipped image rather than this checkout's code.

    from msa500_emu.testing.containers import start_container
    with start_container("/tmp/shelf") as arr:        # image: $MSA500_IMAGE or msa500-emu:test
        arr.fail_drive(2)

The container runs with host networking on free loopback ports (`serve --port1/--port2/--api`),
its state in a host directory bind-mounted at the image's state directory (so `state_dir`, the
API token and the drive images are where the handle says), and is removed when it stops; its
log is kept in `<state_dir>.log`. `pip install msa500-emu[containers]` brings testcontainers.
Ryuk (testcontainers' reaper image) is off unless TESTCONTAINERS_RYUK_DISABLED says otherwise:
the handle removes its own containers, and the reaper's image may not be reachable.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import default_state_dir
from ..management.auth import TOKEN_FILE, TokenError, _write_private, read_token
from .errors import MSA500Error, StartError
from .handle import MSA500
from .launch import ConfigSource, _config_path
from .sessions import LOOPBACK

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

MODE = "container"
IMAGE_ENV = "MSA500_IMAGE"
DEFAULT_IMAGE = "msa500-emu:test"  # the tag scripts/docker-smoke builds
CONTAINER_STATE_DIR = "/var/lib/msa500-emu"  # the image's MSA500_STATE_DIR and VOLUME (Dockerfile)
CONTAINER_CONFIG = "/etc/msa500-emu/shelf.toml"
LABEL = "org.msa500-emu.state-dir"  # on every container this module starts: find strays with `docker ps -a`
STOP_TIMEOUT_S = 30  # docker stop: SIGTERM, then SIGKILL after this (a clean stop takes well under)
PORT_ATTEMPTS = 3  # free ports are picked before the container binds them: another process may win one
_names = itertools.count(1)


def image_name(image: str | None = None) -> str:
    """The image to run: the argument, else $MSA500_IMAGE, else the tag scripts/docker-smoke builds."""
    return image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


def free_ports(n: int = 3) -> list[int]:
    """n distinct free TCP ports on the loopback (held together while picked, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def serve_args(port1: int, port2: int, api: int, config: bool, extra: Sequence[str] = ()) -> list[str]:
    """The container's command (the image's entry point is `msa500-emu`)."""
    args = ["serve", "--state-dir", CONTAINER_STATE_DIR, "--port1", f"{LOOPBACK}:{port1}",
            "--port2", f"{LOOPBACK}:{port2}", "--api", f"{LOOPBACK}:{api}"]
    return args + (["--config", CONTAINER_CONFIG] if config else []) + list(extra)


def serve_env(port1: int, port2: int, api: int) -> dict[str, str]:
    """The image's own variables (its HEALTHCHECK asks MSA500_API), and the token records kept out
    of the state directory (the image's user has it as its home)."""
    return {"MSA500_PORT1": f"{LOOPBACK}:{port1}", "MSA500_PORT2": f"{LOOPBACK}:{port2}",
            "MSA500_API": f"{LOOPBACK}:{api}", "XDG_STATE_HOME": "/tmp"}


def run_as() -> str | None:
    """The container's user: the caller's uid:gid, so the bind-mounted state stays the caller's;
    None (the image's own non-root user) when the caller is root, who can read its files anyway."""
    return None if os.geteuid() == 0 else f"{os.geteuid()}:{os.getegid()}"


def _address_in_use(log: str) -> bool:
    return "address already in use" in log.lower() or f"[errno {errno.EADDRINUSE}]" in log.lower()


class ContainerArray(MSA500):
    """The emulator in a container of `image`; `container` is the testcontainers DockerContainer."""

    mode = MODE

    def __init__(self, state_dir: Path, config: Path | None, log: Path, *, image: str | None = None,
                 extra: Sequence[str] = (), token: str | None = None, startup_timeout: float = 60.0) -> None:
        super().__init__(state_dir, config, log, startup_timeout=startup_timeout)
        self.image = image_name(image)
        self.extra = list(extra)
        self.container: DockerContainer | None = None
        self.exit_code: int | None = None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.token_file = self.state_dir / TOKEN_FILE
        if token is not None:  # the array reads the token it finds in its state directory
            _write_private(self.token_file, token.strip() + "\n")

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        if self.container is None:
            return False
        try:
            self.container.reload()
            return self.container.status == "running"
        except Exception:  # the engine is gone, or the container was removed behind our back
            return False

    def _container(self, port1: int, port2: int, api: int) -> DockerContainer:
        try:
            from testcontainers.core.config import testcontainers_config
            from testcontainers.core.container import DockerContainer
        except ImportError:
            raise StartError("the container mode needs testcontainers: pip install 'msa500-emu[containers]'") from None
        if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
            testcontainers_config.ryuk_disabled = True
        c = (DockerContainer(self.image)
             .with_command(serve_args(port1, port2, api, self.config is not None, self.extra))
             .with_name(f"msa500-{self.state_dir.name}-{os.getpid()}-{next(_names)}")
             .with_volume_mapping(str(self.state_dir), CONTAINER_STATE_DIR, "rw")
             .with_kwargs(network_mode="host", user=run_as(), labels={LABEL: str(self.state_dir)}))
        for key, value in serve_env(port1, port2, api).items():
            c.with_env(key, value)
        if self.config is not None:
            c.with_volume_mapping(str(self.config), CONTAINER_CONFIG, "ro")
        return c

    def _image_config(self, c: DockerContainer) -> dict[str, Any] | None:
        """The image's config (User, Env ...) as the engine has it; None when it has no such image."""
        try:
            return dict(c.get_docker_client().client.images.get(self.image).attrs["Config"] or {})
        except Exception:
            return None

    def _own_state_dir(self, c: DockerContainer) -> None:
        """Root runs the image's user: hand it the state directory (and the token in it)."""
        if os.geteuid() != 0:
            return
        uid, _, gid = str((self._image_config(c) or {}).get("User") or "").partition(":")
        if not uid.isdigit():
            return
        for path in [self.state_dir, *self.state_dir.rglob("*")]:
            os.chown(path, int(uid), int(gid) if gid.isdigit() else int(uid), follow_symlinks=False)

    def _start(self, port1: int, port2: int, api: int, append_log: bool) -> None:
        pick = not (port1 and port2 and api)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            ports = free_ports() if pick else [port1, port2, api]
            try:
                self._start_once(*ports, append_log=append_log or attempt > 1)
                return
            except StartError as exc:
                if not (pick and attempt < PORT_ATTEMPTS and _address_in_use(str(exc))):
                    raise

    def _start_once(self, port1: int, port2: int, api: int, *, append_log: bool) -> None:
        self.exit_code = None
        if not append_log:
            self.log.write_text("")
        c: DockerContainer | None = None
        try:
            c = self._container(port1, port2, api)
            self._own_state_dir(c)
            c.start()
        except Exception as exc:  # docker.errors.*: no engine, no image, a refused create or start
            if c is not None and c._container is not None:  # created, not started: remove it
                with contextlib.suppress(Exception):
                    c.stop(force=True, delete_volume=True)
            if isinstance(exc, StartError):
                raise
            why = _docker_reason(exc)
            if c is not None and self._image_config(c) is None:
                why = (f"the engine has no such image and could not pull it ({why}); "
                       f"build it: docker build -t {self.image} .")
            raise StartError(f"cannot start a container of {self.image}: {why}") from None
        self.container = c
        self.port1, self.port2, self.api = port1, port2, f"http://{LOOPBACK}:{api}"
        try:
            self._wait_ready()
            self.token = read_token(self.token_file) if self.token_file is not None else None
            self.target = str(self.describe()["target_name"])
        except (StartError, TokenError, MSA500Error, KeyError) as exc:
            tail = self.log_tail()
            self._remove()
            raise StartError(f"the container of {self.image} did not start: {exc}\ncontainer log:\n{tail}") from None

    def _wait_ready(self) -> None:
        """GET /api/health until it says ok (as the image's HEALTHCHECK does), while the container runs."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not self.alive:
                raise StartError(f"the container exited (status {self._exit_status()})")
            try:
                with opener.open(f"{self.api}/api/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("status") in ("ok", "powered-off"):
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise StartError(f"{self.api}/api/health did not answer ok within {self.startup_timeout:g} s")
            time.sleep(0.2)

    def _exit_status(self) -> int | None:
        if self.container is None:
            return self.exit_code
        try:
            self.container.reload()
            return int(self.container.get_wrapped_container().attrs["State"]["ExitCode"])
        except Exception:
            return None

    def logs(self) -> str:
        """The container's output so far (the serve banner and the log), or the saved log once removed."""
        if self.container is not None:
            try:
                raw = self.container.get_wrapped_container().logs(stdout=True, stderr=True)
                return bytes(raw).decode("utf-8", "replace")
            except Exception:
                pass
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def _remove(self) -> None:
        """Save the container's log to self.log, then remove the container."""
        c, self.container = self.container, None
        if c is None:
            return
        try:
            raw = c.get_wrapped_container().logs(stdout=True, stderr=True)
            with open(self.log, "a") as f:
                f.write(bytes(raw).decode("utf-8", "replace"))
        except Exception:
            pass
        try:
            c.stop(force=True, delete_volume=True)
        except Exception:
            pass

    def _stop(self) -> int:
        c = self.container
        if c is None:
            return self.exit_code or 0
        try:
            wrapped = c.get_wrapped_container()
            wrapped.stop(timeout=STOP_TIMEOUT_S)  # SIGTERM (the image's STOPSIGNAL): sessions closed, images flushed
            self.exit_code = int(wrapped.wait(timeout=STOP_TIMEOUT_S + 10)["StatusCode"])
        except Exception as exc:
            self.exit_code = 1
            with open(self.log, "a") as f:
                f.write(f"msa500 container: docker stop failed: {_docker_reason(exc)}\n")
        self._remove()
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL: a crash (no flush; the cache file must carry acknowledged writes)."""
        self.close_sessions()
        if self.container is not None:
            try:
                self.container.get_wrapped_container().kill()
                self.exit_code = int(self.container.get_wrapped_container().wait(timeout=30)["StatusCode"])
            except Exception:
                self.exit_code = None
            self._remove()


def _docker_reason(exc: BaseException) -> str:
    """One line of a docker-py error (its explanation, not the whole HTTP exchange)."""
    text = str(getattr(exc, "explanation", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def start_container(state_dir: str | os.PathLike[str] | None = None, config: ConfigSource = None, *,
                    image: str | None = None, extra: Sequence[str] = (), token: str | None = None,
                    log: Path | None = None, startup_timeout: float = 60.0) -> ContainerArray:
    """Start the emulator's image on free loopback ports; the handle (an `MSA500`).

    state_dir: the host directory bind-mounted as the container's state (default: the user's
    msa500-emu state directory); config: None, TOML text or a file (mounted read-only); token:
    the API token to use (written to the state directory), else the one the array makes or finds
    there; extra: more `serve` arguments. StartError with the container's log when it does not come up.
    """
    sd = Path(state_dir if state_dir is not None else default_state_dir()).resolve()
    sd.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config_path(config, sd)
    log_path = Path(log).resolve() if log is not None else sd.parent / f"{sd.name}.log"
    array = ContainerArray(sd, cfg, log_path, image=image, extra=extra, token=token, startup_timeout=startup_timeout)
    array._start(0, 0, 0, False)
    return array


def engine_unavailable() -> str | None:
    """Why no container can start here (None: a Docker engine answers and testcontainers is installed)."""
    try:
        import docker
        import testcontainers.core.container  # noqa: F401
    except ImportError:
        return "testcontainers is not installed (pip install 'msa500-emu[containers]')"
    try:
        client: Any = docker.from_env(timeout=10)
        client.ping()
        client.close()
    except Exception as exc:
        return f"the Docker engine does not answer: {_docker_reason(exc)}"
    return None
