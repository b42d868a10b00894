"""Process settings and the first build of a new shelf, from TOML and the command line.

Every mistake becomes one ConfigError naming the key and what is wrong with it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_model.controller import (
    BAY_COUNT,
    ArraySpec,
    ConnectionSpec,
    LogicalDriveSpec,
    LunSpec,
    ShelfError,
    ShelfSpec,
)

from . import units
from .iscsi.chap import ChapConfig

if TYPE_CHECKING:
    from .alerting.settings import AlertSettings


class ConfigError(Exception):
    """Bad configuration: the message is the one line the user sees."""


@dataclass
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Settings:
    state_dir: Path
    port1: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 3260))
    port2: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 3261))
    api: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 8500))
    api_token_file: Path | None = None  # None: <state_dir>/api.token
    api_auth: bool = True  # False: --no-api-auth (anyone who reaches the API may use it)
    log_level: str = "info"
    shelf: ShelfSpec = field(default_factory=ShelfSpec)
    chap: ChapConfig = field(default_factory=ChapConfig)
    nop_interval: float = 10.0
    nop_timeout: float = 30.0
    cmd_window: int = 128
    login_timeout: float = 15.0
    max_connections: int = 1024
    max_connections_per_address: int = 64
    discovery_chap: ChapConfig = field(default_factory=ChapConfig)
    alerts: AlertSettings | None = None  # [alerts]: SNMP managers, syslog, webhooks (None: none)
    record_file: Path | None = None  # serve --record FILE (msa500_emu/recording)
    record_data_cap: int | None = None  # serve --record-data-cap: data-out kept in full (None: the default)


LOG_LEVELS = ("debug", "info", "warning", "error")


def default_state_dir() -> Path:
    env = os.environ.get("MSA500_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "msa500-emu"


def user_path(text: str, what: str) -> Path:
    """A path with ~ or ~user expanded; an unknown user is a ConfigError, not a RuntimeError."""
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # ~nosuchuser, or no home directory
        raise ConfigError(f"{what}: {text!r}: {exc}") from None


def parse_endpoint(text: str, what: str) -> Endpoint:
    """HOST:PORT, [IPv6]:PORT or :PORT (loopback)."""
    t = text.strip()
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", t) or re.match(r"^([^:\[\]]*):(\d+)$", t)
    if not m:
        raise ConfigError(f"{what}: {text!r} is not HOST:PORT")
    host, port = m.group(1) or "127.0.0.1", int(m.group(2))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} outside 0..65535")
    return Endpoint(host, port)


def parse_size(value: Any, what: str) -> int:
    """Bytes from a TOML size: a string with a binary unit ("36GiB", "512MiB", "8GB" = 8 GiB,
    "1.5T"), or a bare number of bytes (an integer, or a string without unit). See units.py."""
    try:
        return units.parse_size(value, default_unit="B")
    except units.SizeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _take(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def _typed(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {name}, got {value!r}")
    return value


def load(path: Path | None, overrides: dict[str, str | None]) -> Settings:
    """Read the TOML file (if any), then apply command-line overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} not found") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
        except UnicodeDecodeError as exc:  # TOML is UTF-8 text
            raise ConfigError(f"config file {path}: not UTF-8 (byte {exc.start}: {exc.reason})") from exc
    _take(raw, {"state_dir", "port1", "port2", "api", "log_level", "shelf", "iscsi", "alerts"}, "config")
    settings = Settings(state_dir=default_state_dir())
    if "state_dir" in raw:
        settings.state_dir = user_path(_typed(raw, "state_dir", str, "config"), "state_dir")
    if isinstance(raw.get("api"), dict):  # [api] listen = "HOST:PORT", token_file = "PATH"
        _api_table(raw.pop("api"), settings, path)
    for key in ("port1", "port2", "api"):
        if key in raw:
            setattr(settings, key, parse_endpoint(_typed(raw, key, str, "config"), key))
    if "log_level" in raw:
        settings.log_level = _typed(raw, "log_level", str, "config").lower()
    if "shelf" in raw:
        settings.shelf = _shelf(_typed(raw, "shelf", dict, "config"))
    if "iscsi" in raw:
        _iscsi(_typed(raw, "iscsi", dict, "config"), settings)
    if "alerts" in raw:
        from .alerting.settings import AlertSettingsError, from_table  # it reads parse_endpoint from here

        try:
            settings.alerts = from_table(raw["alerts"])
        except AlertSettingsError as exc:
            raise ConfigError(str(exc)) from None
    if overrides.get("state_dir"):
        settings.state_dir = user_path(str(overrides["state_dir"]), "--state-dir")
    for key in ("port1", "port2", "api"):
        value = overrides.get(key)
        if value:
            setattr(settings, key, parse_endpoint(value, f"--{key}"))
    if overrides.get("log_level"):
        settings.log_level = str(overrides["log_level"]).lower()
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level {settings.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    eps = [(str(settings.port1), "port1"), (str(settings.port2), "port2"), (str(settings.api), "api")]
    seen: dict[str, str] = {}
    for ep, name in eps:
        if not ep.endswith(":0") and ep in seen:
            raise ConfigError(f"{name} and {seen[ep]} both listen on {ep}")
        seen[ep] = name
    return settings


def _api_table(table: dict[str, Any], settings: Settings, path: Path | None) -> None:
    _take(table, {"listen", "token_file"}, "api")
    if "listen" in table:
        settings.api = parse_endpoint(_typed(table, "listen", str, "api"), "api.listen")
    if "token_file" in table:
        tf = user_path(_typed(table, "token_file", str, "api"), "api.token_file")
        settings.api_token_file = tf if tf.is_absolute() or path is None else Path(path).parent / tf


def _drive_size(value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().lower() in ("empty", "none", "0"):
        return 0
    if value == 0:
        return 0
    return parse_size(value, what)


def _shelf(table: dict[str, Any]) -> ShelfSpec:
    _take(table, {"serial", "drive_size", "drive_sizes", "arrays", "logical_drives", "rebuild_priority", "cache",
                  "connections"}, "shelf")
    spec = ShelfSpec()
    if "serial" in table:
        serial = _typed(table, "serial", str, "shelf")
        if not re.fullmatch(r"[A-Za-z0-9]{4,20}", serial):
            raise ConfigError("shelf.serial: 4-20 letters and digits")
        spec.serial = serial
    if "drive_size" in table:
        drive = _drive_size(table["drive_size"], "shelf.drive_size")
        spec.drive_bytes = [drive] * BAY_COUNT
    if "drive_sizes" in table:
        sizes = _typed(table, "drive_sizes", list, "shelf")
        if len(sizes) != BAY_COUNT:
            raise ConfigError(f"shelf.drive_sizes: {BAY_COUNT} entries needed (\"empty\" for none), {len(sizes)} given")
        spec.drive_bytes = [_drive_size(s, f"shelf.drive_sizes[{i}]") for i, s in enumerate(sizes)]
    if "rebuild_priority" in table:
        prio = _typed(table, "rebuild_priority", str, "shelf").lower()
        if prio not in ("high", "medium", "low"):
            raise ConfigError("shelf.rebuild_priority: high, medium or low")
        spec.rebuild_priority = prio
    if "cache" in table:
        _cache(_typed(table, "cache", dict, "shelf"), spec)
    for i, h in enumerate(_typed(table, "connections", list, "shelf") if "connections" in table else []):
        where = f"shelf.connections[{i}]"  # host connections (ADD CONNECTION): name, iqn, port (1, 2; none: either)
        if not isinstance(h, dict):
            raise ConfigError(f"{where}: a table with name, iqn and port")
        _take(h, {"name", "iqn", "port"}, where)
        if "name" not in h or "iqn" not in h:
            raise ConfigError(f"{where}: name and iqn needed")
        spec.connections.append(ConnectionSpec(_typed(h, "name", str, where), _typed(h, "iqn", str, where),
                                               _typed(h, "port", int, where) if "port" in h else None))
    if "arrays" in table:
        spec.arrays = []
        for i, arr in enumerate(_typed(table, "arrays", list, "shelf")):
            where = f"shelf.arrays[{i}]"
            if not isinstance(arr, dict):
                raise ConfigError(f"{where}: expected a table")
            _take(arr, {"name", "bays", "spares"}, where)
            if "name" not in arr or "bays" not in arr:
                raise ConfigError(f"{where}: name and bays are required")
            spec.arrays.append(ArraySpec(
                name=_typed(arr, "name", str, where).upper(),
                bays=_bays(_typed(arr, "bays", list, where), f"{where}.bays"),
                spares=_bays(_typed(arr, "spares", list, where), f"{where}.spares") if "spares" in arr else [],
            ))
    if "logical_drives" in table:
        lds = _typed(table, "logical_drives", list, "shelf")
        new_style = spec.arrays is not None
        if new_style:
            spec.logical_drives = []
        else:
            spec.luns = []
        for i, ld in enumerate(lds):
            where = f"shelf.logical_drives[{i}]"
            if not isinstance(ld, dict):
                raise ConfigError(f"{where}: expected a table")
            if "lun" not in ld:
                raise ConfigError(f"{where}: lun missing")
            lun = _typed(ld, "lun", int, where)
            name = _typed(ld, "name", str, where) if "name" in ld else ""
            size: int | None = parse_size(ld["size"], f"{where}.size") if "size" in ld else None
            if size is not None and size % 512:
                raise ConfigError(f"{where}.size: not a multiple of 512 bytes")
            if new_style:
                _take(ld, {"lun", "array", "raid", "size", "name", "stripe_kib"}, where)
                if "array" not in ld or "raid" not in ld:
                    raise ConfigError(f"{where}: array and raid are required")
                raid = str(ld["raid"]).upper()
                if raid not in ("0", "1", "10", "1+0", "5", "ADG", "6"):
                    raise ConfigError(f"{where}.raid: {ld['raid']!r} is not 0, 1, 10, 5 or ADG")
                stripe = _typed(ld, "stripe_kib", int, where) if "stripe_kib" in ld else None
                if stripe is not None and (stripe not in (16, 32, 64, 128, 256)):
                    raise ConfigError(f"{where}.stripe_kib: 16, 32, 64, 128 or 256")
                spec.logical_drives.append(LogicalDriveSpec(  # type: ignore[union-attr]
                    lun=lun, array=_typed(ld, "array", str, where).upper(),
                    raid={"1+0": "10", "6": "ADG"}.get(raid, raid), size_bytes=size, name=name,
                    stripe_kib=stripe))
            else:
                _take(ld, {"lun", "bay", "size", "name"}, where)
                if size is None:
                    raise ConfigError(f"{where}: size missing")
                bay = _typed(ld, "bay", int, where) if "bay" in ld else 1
                spec.luns.append(LunSpec(lun=lun, bay=bay, size_bytes=size, name=name))
    try:
        spec.validate()
    except ShelfError as exc:
        raise ConfigError(f"shelf: {exc}") from exc
    return spec


def _cache(table: dict[str, Any], spec: ShelfSpec) -> None:
    """[shelf.cache]: the array accelerator as built (later changes go through SET CACHE)."""
    where = "shelf.cache"
    _take(table, {"size_mb", "ratio_read_percent", "enabled", "force_write_back", "holdup_s", "charge_s",
                  "spinup_s"}, where)
    c = spec.cache
    if "size_mb" in table:
        c.size_mb = _typed(table, "size_mb", int, where)
        if c.size_mb not in (128, 256):
            raise ConfigError(f"{where}.size_mb: 128 or 256 (the MSA500's cache modules)")
    if "ratio_read_percent" in table:
        c.ratio_read_percent = _typed(table, "ratio_read_percent", int, where)
        if c.ratio_read_percent not in (0, 25, 50, 75, 100):
            raise ConfigError(f"{where}.ratio_read_percent: 0, 25, 50, 75 or 100")
    for key in ("enabled", "force_write_back"):
        if key in table:
            setattr(c, key, _typed(table, key, bool, where))
    for key in ("holdup_s", "charge_s", "spinup_s"):
        if key in table:
            value = float(_typed(table, key, (int, float), where))
            if value < 0:
                raise ConfigError(f"{where}.{key}: seconds, not negative")
            setattr(c, key, value)


def _bays(values: list[Any], where: str) -> list[int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= BAY_COUNT for v in values):
        raise ConfigError(f"{where}: bay numbers 1-{BAY_COUNT}")
    return list(values)


def _iscsi(table: dict[str, Any], settings: Settings) -> None:
    _take(table, {"nop_interval", "nop_timeout", "cmd_window", "chap", "login_timeout", "max_connections",
                  "max_connections_per_address", "discovery_chap"}, "iscsi")
    for key in ("max_connections", "max_connections_per_address"):
        if key in table:
            count = _typed(table, key, int, "iscsi")
            if not 1 <= count <= 65536:
                raise ConfigError(f"iscsi.{key}: 1..65536")
            setattr(settings, key, count)
    for key in ("nop_interval", "nop_timeout", "login_timeout"):
        if key in table:
            value = float(_typed(table, key, (int, float), "iscsi"))
            if value <= 0:
                raise ConfigError(f"iscsi.{key}: must be positive")
            setattr(settings, key, value)
    if "cmd_window" in table:
        window = _typed(table, "cmd_window", int, "iscsi")
        if not 1 <= window <= 1024:
            raise ConfigError("iscsi.cmd_window: 1..1024")
        settings.cmd_window = window
    for which in ("chap", "discovery_chap"):  # normal sessions; discovery sessions (SendTargets)
        if which not in table:
            continue
        where = f"iscsi.{which}"
        chap = _typed(table, which, dict, "iscsi")
        _take(chap, {"users", "target_user", "target_secret"}, where)
        users = _typed(chap, "users", dict, where) if "users" in chap else {}
        for name, secret in users.items():
            if not isinstance(secret, str) or not 12 <= len(secret) <= 255:
                raise ConfigError(f"{where}.users.{name}: secret must be a string of 12-255 characters")
        cfg = ChapConfig(
            users=dict(users),
            target_user=chap.get("target_user"),
            target_secret=chap.get("target_secret"),
        )
        if bool(cfg.target_user) != bool(cfg.target_secret):
            raise ConfigError(f"{where}: target_user and target_secret go together")
        setattr(settings, which, cfg)

