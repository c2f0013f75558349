"""Checking a client's credentials against the configured users.

Users and their password hashes are ``users``'s part.  Checking a password
costs tens of milliseconds of CPU by design, so it runs in a worker thread,
and a password that checked out is remembered as a keyed digest so that a
client submitting many jobs pays that cost once.  An address that keeps
failing is answered more and more slowly, and its attempts are checked one at
a time: one after a failure waits out that failure's delay first, so
connections opened in parallel give no more guesses than one connection after
another.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import time
from collections import OrderedDict

from ..users import User, hash_password, verify_password

__all__ = ["Authenticator", "throttled_address"]

#: Failures from one address allowed before replies to it are slowed down.
FREE_FAILURES = 3
#: The longest a failing address is made to wait.
MAX_FAILURE_DELAY_S = 5.0
#: Failures are forgotten after this long without another.
FAILURE_MEMORY_S = 600.0
_MAX_TRACKED = 10_000


class Authenticator:
    """Checks ``_sys_User``/``_sys_Password`` against the configured users."""

    def __init__(self, users: tuple[User, ...]) -> None:
        self._users = {user.name: user for user in users}
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        #: Addresses with an attempt under way (at most one per connection).
        self._turns: dict[str, _Turn] = {}
        self._decoy = hash_password(os.urandom(16).hex()) if users else ""

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def set_users(self, users: tuple[User, ...]) -> None:
        """Check against ``users`` from now on (a reload).  The passwords that
        checked out are forgotten (one may have changed); failures are kept."""
        self._users = {user.name: user for user in users}
        self._verified.clear()
        if users and not self._decoy:
            self._decoy = hash_password(os.urandom(16).hex())

    async def authenticate(self, name: str, password: str, address: str) -> User | None:
        """The user these credentials name, or None (after a delay if this
        address keeps failing).

        Attempts from one address take turns: each waits until the one before
        it has been checked, and, after a failure, until that failure's delay
        has passed.  Otherwise a client sending its guesses on many connections
        at once would have them all checked at once, the delays running side by
        side, and a right one answered at once among them.  Only a password
        remembered from an earlier check, from an address with no failure on
        record and no attempt under way, skips the line (a client submitting
        many jobs at once).
        """
        address = throttled_address(address)
        user = self._users.get(name)
        if (user is not None and address not in self._turns and address not in self._failures
                and self._remembered(user, password)):
            return user
        turn = self._turns.get(address)
        if turn is None:
            turn = self._turns[address] = _Turn()
        turn.attempts += 1
        try:
            async with turn.lock:
                wait = self._penalty(address)
                if wait > 0:
                    await asyncio.sleep(wait)
                if await self._check(user, password):
                    self._failures.pop(address, None)
                    return user
                delay = self._failed(address)
        finally:
            turn.attempts -= 1
            if not turn.attempts:
                del self._turns[address]
        await asyncio.sleep(delay)  # (the next attempt waits for it too: _penalty)
        return None

    def _token(self, user: User, password: str) -> bytes:
        """What is kept of a password that checked out: a digest keyed for this process."""
        return hmac.new(self._key, f"{user.name}\0{password}".encode(), "sha256").digest()

    def _remembered(self, user: User, password: str) -> bool:
        known = self._verified.get(user.name)
        return known is not None and hmac.compare_digest(known, self._token(user, password))

    async def _check(self, user: User | None, password: str) -> bool:
        if user is None:
            # The same scrypt work as for a real user, so that timing does not
            # tell which user names exist.
            await asyncio.to_thread(verify_password, password, self._decoy)
            return False
        if self._remembered(user, password):
            return True
        if not await asyncio.to_thread(verify_password, password, user.password_hash):
            return False
        self._verified[user.name] = self._token(user, password)
        return True

    def _penalty(self, address: str) -> float:
        """How long an attempt from this address must still wait for the delay of
        the last failure from it."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        now = time.monotonic()
        if now - last > FAILURE_MEMORY_S:
            return 0.0
        return last + _delay(count) - now

    def _failed(self, address: str) -> float:
        """Count a failure; return how long to wait before answering it."""
        now = time.monotonic()
        count, last = self._failures.pop(address, (0, now))
        count = 1 if now - last > FAILURE_MEMORY_S else count + 1
        self._failures[address] = (count, now)
        while len(self._failures) > _MAX_TRACKED:
            self._failures.popitem(last=False)
        return _delay(count)


def throttled_address(address: str) -> str:
    """What failures are counted against: an IPv4 address as it is (also when
    written as an IPv4-mapped IPv6 address), an IPv6 address's /64 network.

    A single IPv6 host usually has a whole /64 to itself (SLAAC, privacy
    addresses): counted per address, it could take a new one for every three
    guesses.
    """
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def _delay(failures: int) -> float:
    """How long to hold an address back after its ``failures``-th failure in a row."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(MAX_FAILURE_DELAY_S, 0.25 * 2 ** (failures - FREE_FAILURES - 1))


class _Turn:
    """The attempts of one address under way: checked one at a time."""

    __slots__ = ("lock", "attempts")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.attempts = 0  # checked or waiting; the turn is dropped at 0
