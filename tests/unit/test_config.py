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


@pytest.mark.parametrize(
    ("text", "toml_bytes", "ctl_bytes"),
    [
        ("36GiB", 36 << 30, 36 << 30),
        ("8GB", 8 << 30, 8 << 30),  # binary whatever the spelling
        ("512mib", 512 << 20, 512 << 20),
        ("1.5T", int(1.5 * (1 << 40)), int(1.5 * (1 << 40))),
        ("4096B", 4096, 4096),
        ("2048", 2048, 2048 << 20),  # a bare number: bytes in the TOML, MiB on the ctl line
    ],
)
def test_one_size_grammar_a_bare_number_is_bytes_in_the_toml_and_mib_on_the_ctl_line(
        text: str, toml_bytes: int, ctl_bytes: int) -> None:
    from msa500_emu.config import parse_size as toml_size
    from msa500_emu.management.commands import CommandError
    from msa500_emu.management.commands import parse_size as ctl_size

    assert toml_size(text, "shelf.drive_size") == toml_bytes and ctl_size(text) == ctl_bytes
    assert toml_size(4096, "shelf.drive_size") == 4096  # a TOML integer is bytes too
    for bad in ("lots", "0", "-1GB"):
        with pytest.raises(ConfigError, match=r"shelf\.drive_size"):
            toml_size(bad, "shelf.drive_size")
        with pytest.raises(CommandError):
            ctl_size(bad)
