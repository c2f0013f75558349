"""Users from the configuration, and their password hashes.

Passwords are stored as ``scrypt$N$r$p$salt$hash`` (salt and hash in base64),
made by ``jobmonitor hash-password``.  Checking them against a client's
credentials is the server's part (``server.auth``); the configuration only
holds ``User`` values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["User", "ROLES", "hash_password", "verify_password"]

ROLES = ("user", "admin")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


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
