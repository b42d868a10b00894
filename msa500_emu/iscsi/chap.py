"""CHAP (RFC 1994 as used by RFC 7143 section 12.1.3), target side, with mutual CHAP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field

CHAP_MD5 = "5"
CHALLENGE_LEN = 16
# Challenges (the target's and the initiators') remembered per node, to refuse reflection
# and replay across sessions; bounded so a login flood cannot grow it.
RECENT_CHALLENGES = 4096


class ChapError(Exception):
    """Authentication failed (login status 0x0201)."""


def decode_binary(value: str) -> bytes:
    """RFC 7143 binary-value: 0x hex or 0b base64."""
    v = value.strip()
    try:
        if v[:2] in ("0x", "0X"):
            h = v[2:]
            if len(h) % 2:
                h = "0" + h
            return bytes.fromhex(h)
        if v[:2] in ("0b", "0B"):
            return base64.b64decode(v[2:], validate=True)
    except ValueError as exc:
        raise ChapError(f"bad binary value {value[:20]!r}") from exc
    raise ChapError(f"binary value {value[:20]!r} has no 0x/0b prefix")


def encode_hex(data: bytes) -> str:
    return "0x" + data.hex()


def chap_response(ident: int, secret: bytes, challenge: bytes) -> bytes:
    return hashlib.md5(bytes([ident]) + secret + challenge).digest()


@dataclass
class ChapConfig:
    """Initiator credentials the target accepts, and the target's own for mutual CHAP."""

    users: dict[str, str] = field(default_factory=dict, repr=False)  # secrets never in a repr
    target_user: str | None = None
    target_secret: str | None = field(default=None, repr=False)

    @property
    def required(self) -> bool:
        return bool(self.users)


class RecentChallenges:
    """The last RECENT_CHALLENGES challenges seen on a node, oldest forgotten first."""

    def __init__(self, size: int = RECENT_CHALLENGES) -> None:
        self._order: deque[bytes] = deque()
        self._set: set[bytes] = set()
        self.size = size

    def __contains__(self, challenge: object) -> bool:
        return challenge in self._set

    def add(self, challenge: bytes) -> None:
        if challenge in self._set:
            return
        if len(self._order) >= self.size:
            self._set.discard(self._order.popleft())
        self._order.append(challenge)
        self._set.add(challenge)

    def fresh(self) -> bytes:
        """A new random challenge (CSPRNG), never one issued or seen recently."""
        while True:
            challenge = secrets.token_bytes(CHALLENGE_LEN)
            if challenge not in self._set:
                self.add(challenge)
                return challenge


class ChapResponder:
    """Drives one CHAP exchange; each step takes the initiator's keys, returns ours."""

    def __init__(self, config: ChapConfig, rng: bytes | None = None, recent: RecentChallenges | None = None) -> None:
        self.config = config
        self.state = "wait_a"
        self.recent = recent if recent is not None else RecentChallenges()
        if rng:  # tests: a fixed identifier and challenge
            self.ident, self.challenge = rng[0], rng[1 : CHALLENGE_LEN + 1]
            self.recent.add(self.challenge)
        else:
            self.ident, self.challenge = secrets.randbelow(256), self.recent.fresh()
        self.done = False

    def step(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        if self.state == "wait_a":
            algs = keys.get("CHAP_A")
            if algs is None:
                return []
            if CHAP_MD5 not in algs.split(","):
                raise ChapError(f"no supported CHAP algorithm in {algs!r}")
            self.state = "wait_r"
            return [
                ("CHAP_A", CHAP_MD5),
                ("CHAP_I", str(self.ident)),
                ("CHAP_C", encode_hex(self.challenge)),
            ]
        if self.state == "wait_r":
            name, resp = keys.get("CHAP_N"), keys.get("CHAP_R")
            if name is None or resp is None:
                raise ChapError("CHAP_N and CHAP_R missing")
            secret = self.config.users.get(name)
            if secret is None:
                raise ChapError(f"unknown CHAP user {name!r}")
            want = chap_response(self.ident, secret.encode(), self.challenge)
            if not hmac.compare_digest(decode_binary(resp), want):
                raise ChapError(f"wrong CHAP response for user {name!r}")
            reply: list[tuple[str, str]] = []
            if "CHAP_I" in keys or "CHAP_C" in keys:
                reply = self._mutual(keys)
            self.state = "done"
            self.done = True
            return reply
        if "CHAP_R" in keys or "CHAP_C" in keys:  # one response per challenge, one exchange per login
            raise ChapError("CHAP keys after the exchange was complete")
        return []

    def _mutual(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        if "CHAP_I" not in keys or "CHAP_C" not in keys:
            raise ChapError("mutual CHAP needs both CHAP_I and CHAP_C")
        if not self.config.target_user or self.config.target_secret is None:
            raise ChapError("mutual CHAP requested but the target has no credentials")
        try:
            ident = int(keys["CHAP_I"], 0)
        except ValueError as exc:
            raise ChapError("bad CHAP_I") from exc
        if not 0 <= ident <= 255:
            raise ChapError("CHAP_I out of range")
        challenge = decode_binary(keys["CHAP_C"])
        if not challenge:
            raise ChapError("empty CHAP_C")
        if challenge == self.challenge:
            raise ChapError("initiator reflected the target's challenge")
        if challenge in self.recent:  # a challenge of ours to another session, or a replayed one
            raise ChapError("initiator's CHAP_C was issued or used recently (reflection or replay)")
        self.recent.add(challenge)
        resp = chap_response(ident, self.config.target_secret.encode(), challenge)
        return [("CHAP_N", self.config.target_user), ("CHAP_R", encode_hex(resp))]
