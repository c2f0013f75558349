"""Users, password hashes, and who may do what.

Passwords are stored as ``scrypt$N$r$p$salt$hash`` (salt and hash in base64),
made by ``jobmonitor hash-password``.  Checking one costs tens of milliseconds
of CPU by design, so it runs in a worker thread, and a password that checked
out is remembered as a keyed digest so that a client submitting many jobs pays
that cost once.  An address that keeps failing is answered more and more
slowly.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["User", "ROLES", "hash_password", "verify_password", "Authenticator"]

ROLES = ("user", "admin")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
#: Failures from one address allowed before replies to it are slowed down.
FREE_FAILURES = 3
#: The longest a failing address is made to wait.
MAX_FAILURE_DELAY_S = 5.0
#: Failures are forgotten after this long without another.
FAILURE_MEMORY_S = 600.0
_MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class User:
    """A user from the configuration; the hash never shows in a repr."""

    name: str
    password_hash: str = field(repr=False)
    role: str = "user"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"users.{self.name}.role: must be user or admin, got {self.role!r}")
        _parse_hash(self.password_hash, f"users.{self.name}.password_hash")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Hash a password for the configuration file (scrypt, random salt)."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=64 * 1024 * 1024)
    encode = base64.b64encode
    return (f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}$"
            f"{encode(salt).decode()}${encode(digest).decode()}")


def _parse_hash(stored: str, where: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        return n, r, p, base64.b64decode(parts[4], validate=True), base64.b64decode(
            parts[5], validate=True)
    except ValueError:
        raise ConfigError(f"{where}: not a hash made by `jobmonitor hash-password`") from None


def verify_password(password: str, stored: str) -> bool:
    """Check a password against a stored hash, in constant time."""
    n, r, p, salt, expected = _parse_hash(stored, "password_hash")
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                            maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(digest, expected)


class Authenticator:
    """Checks ``_sys_User``/``_sys_Password`` against the configured users."""

    def __init__(self, users: tuple[User, ...]) -> None:
        self._users = {user.name: user for user in users}
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._decoy = hash_password(os.urandom(16).hex()) if users else ""

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def authenticate(self, name: str, password: str, address: str) -> User | None:
        """The user these credentials name, or None (after a delay if this
        address keeps failing)."""
        user = self._users.get(name)
        if user is None:
            # The same scrypt work as for a real user, so that timing does not
            # tell which user names exist.
            await asyncio.to_thread(verify_password, password, self._decoy)
            ok = False
        else:
            ok = await self._check(user, password)
        if ok:
            self._failures.pop(address, None)
            return user
        await asyncio.sleep(self._failed(address))
        return None

    async def _check(self, user: User, password: str) -> bool:
        token = hmac.new(self._key, f"{user.name}\0{password}".encode(), "sha256").digest()
        known = self._verified.get(user.name)
        if known is not None and hmac.compare_digest(known, token):
            return True
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            return False
        self._verified[user.name] = token
        return True

    def _failed(self, address: str) -> float:
        """Count a failure; return how long to wait before answering it."""
        now = time.monotonic()
        count, last = self._failures.pop(address, (0, now))
        count = 1 if now - last > FAILURE_MEMORY_S else count + 1
        self._failures[address] = (count, now)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)
        if count <= FREE_FAILURES:
            return 0.0
        return min(MAX_FAILURE_DELAY_S, 0.25 * 2 ** (count - FREE_FAILURES - 1))
