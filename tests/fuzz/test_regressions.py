"""Crashes the fuzz targets found, each fed again through the public API, with the answer it must get."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msa500_emu.config import ConfigError, load


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """fuzz config: bytes that are not UTF-8 raised UnicodeDecodeError out of load()."""
    path = tmp_path / "msa500.toml"
    path.write_bytes(b'port1 = "\x9f"\n')
    with pytest.raises(ConfigError, match=r"msa500\.toml: not UTF-8 \(byte 9: invalid start byte\)$"):
        load(path, {})


@pytest.mark.parametrize(("toml", "overrides", "what"), [
    ('state_dir = "~nosuchuser-fuzz/msa500"\n', {}, "state_dir"),
    ("", {"state_dir": "~nosuchuser-fuzz/msa500"}, "--state-dir"),
    ('[api]\ntoken_file = "~nosuchuser-fuzz/api.token"\n', {}, "api.token_file"),
])
def test_a_path_under_an_unknown_users_home_is_a_config_error(tmp_path: Path, toml: str,
                                                               overrides: dict[str, str | None], what: str) -> None:
    """fuzz config: state_dir = "~var/lib" raised RuntimeError (Path.expanduser) out of load()."""
    path = tmp_path / "msa500.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=rf"^{re.escape(what)}: '~nosuchuser-fuzz/[a-z0-9.]+': "
                                          r"Could not determine home directory\.$"):
        load(path, overrides)
