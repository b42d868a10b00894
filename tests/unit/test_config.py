"""The TOML configuration: the README's example is valid, mistakes get one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msa500_emu.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    text = re.search(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert text
    cfg = tmp_path / "readme.toml"
    cfg.write_text(text.group(1).replace("/var/lib/msa500", str(tmp_path / "state")))
    s = load(cfg, {})
    assert s.port1.port == 3260 and s.shelf.arrays and s.shelf.logical_drives
    assert s.shelf.logical_drives[0].raid == "5" and s.shelf.cache.size_mb == 128


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[shelf]\ndrive_size = "lots"\n', "shelf.drive_size"),
        ('colour = "blue"\n', "unknown key 'colour'"),
        ('[shelf.cache]\nsize_mb = 64\n', "shelf.cache.size_mb"),
        ('[[shelf.arrays]]\nname = "A"\nbays = [1, 99]\n', "bay numbers"),
        ('[shelf]\n[[shelf.arrays]]\nname = "A"\nbays = [1, 2]\n[[shelf.logical_drives]]\nlun = 1\n'
         'array = "A"\nraid = "7"\n', "raid"),
        ('[iscsi.chap]\nusers = { "u" = "short" }\n', "12-255"),
        ('port1 = "127.0.0.1:3260"\nport2 = "127.0.0.1:3260"\n', "both listen"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load(cfg, {})
    assert needle in str(exc.value) and "\n" not in str(exc.value)
