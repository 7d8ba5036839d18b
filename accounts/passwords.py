"""Password hashes: scrypt (memory-hard, in the standard library), a bounded number computed at once."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

from common.errors import MoEChatError


@dataclass(frozen=True)
class Cost:
    """scrypt's parameters: memory per hash is 128 x r x n bytes (128 MiB at n=2^17, r=8)."""

    n: int = 2 ** 17
    r: int = 8
    p: int = 1

    @property
    def memory_bytes(self) -> int:
        return 128 * self.r * self.n


DEFAULT_COST = Cost()
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # a longer "password" is someone making the server hash megabytes
AT_ONCE = 2  # hashes computed at the same time, server-wide: each holds its memory for about half a second
_slots = threading.BoundedSemaphore(AT_ONCE)
_PREFIX = "scrypt"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, cost: Cost) -> bytes:
    with _slots:
        return hashlib.scrypt(password.encode()[:MAX_PASSWORD_CHARS * 4], salt=salt, n=cost.n, r=cost.r, p=cost.p,
                              maxmem=cost.memory_bytes + (16 << 20), dklen=32)


def check_new_password(password: str) -> None:
    """Refuse a password too short to stand up to guessing, or absurdly long."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise MoEChatError(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if len(password) > MAX_PASSWORD_CHARS:
        raise MoEChatError(f"A password has at most {MAX_PASSWORD_CHARS} characters.")


def hash_password(password: str, cost: Cost = DEFAULT_COST) -> str:
    """The stored form: scrypt$n$r$p$salt$hash (the cost travels with the hash, so it can be raised later)."""
    salt = os.urandom(16)
    return f"{_PREFIX}${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(_derive(password, salt, cost))}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`, compared in constant time; a malformed stored hash never matches."""
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        cost = Cost(int(n), int(r), int(p))
        if prefix != _PREFIX:
            return False
        expected = _unb64(digest)
        given = _derive(password[:MAX_PASSWORD_CHARS], _unb64(salt), cost)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


@functools.cache
def dummy_hash() -> str:
    """Compared against when the name is unknown (or has no password), so that a wrong name takes as long as a
    wrong password and the answer's timing tells no one which names exist."""
    return hash_password(os.urandom(16).hex(), DEFAULT_COST)
