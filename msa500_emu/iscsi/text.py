"""Text keys (RFC 7143 section 6): "key=value" pairs, each NUL-terminated."""

from __future__ import annotations

MAX_KEY_LEN = 63
MAX_VALUE_LEN = 8192


class TextError(ValueError):
    """Malformed key=value data."""


def parse_text(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """Decode a text data segment; keeps order and duplicates for the caller to judge."""
    raw = bytes(data)
    if not raw:
        return []
    if raw[-1:] != b"\0":
        raise TextError("text data not NUL-terminated")
    pairs: list[tuple[str, str]] = []
    for item in raw[:-1].split(b"\0"):
        if not item:
            continue  # tolerate padding-like empty strings
        key, sep, value = item.partition(b"=")
        if not sep or not key:
            raise TextError(f"malformed text item {item[:40]!r}")
        try:
            k, v = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextError("text is not UTF-8") from exc
        if len(k) > MAX_KEY_LEN:
            raise TextError(f"key {k[:40]!r} longer than {MAX_KEY_LEN}")
        if len(v) > MAX_VALUE_LEN and k not in ("CHAP_C", "CHAP_R"):
            raise TextError(f"value of {k} longer than {MAX_VALUE_LEN}")
        pairs.append((k, v))
    return pairs


def encode_text(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)
