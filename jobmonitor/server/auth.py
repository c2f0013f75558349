"""Checking a client's credentials against the configured users.

Users and their password hashes are ``users``'s part.  Checking a password
costs tens of milliseconds of CPU and 16 MiB by design, so checks run on two
threads of their own, at most
``MAX_CHECKS_WAITING`` waiting or running (beyond, ``R0005011`` at once), and a
password that checked out is remembered as a keyed digest so that a client
submitting many jobs pays that cost once.

Failures are counted per address, per network and per user name
(``throttle``).  An address that keeps failing is answered more and more
slowly, and its attempts are checked one at a time: one after a failure waits
out that failure's delay first, so connections opened in parallel give no more
guesses than one connection after another.  Attempts from a network with
failures on record also take turns per user name, each after the delay the
name's failures earned, so guesses at one user from many addresses are paced
as well; an attempt from a network with no failure skips that line and is
checked first, so a spray from elsewhere cannot hold up a real user's login.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import RequestError
from ..users import User, hash_password, verify_password
from ..wire.codes import Reply
from .throttle import (
    CLEAN,
    MAX_FAILURE_DELAY_S,
    UNRECORDED,
    FailureTable,
    Line,
    Turns,
    failure_delay,
    penalty,
    throttled_address,
    throttled_network,
)

__all__ = ["Authenticator", "throttled_address"]

#: Failures from one address allowed before replies to it are slowed down.
FREE_FAILURES = 3
#: Failures for one user name (from any address) before its attempts from
#: networks with failures are paced.
USER_FREE_FAILURES = 10
#: Threads checking passwords (each check takes a core and 16 MiB while it runs).
CHECK_THREADS = 2
#: Checks waiting or running at most; beyond, ``R0005011`` at once.
MAX_CHECKS_WAITING = 32
#: ... of which from one network at most, so one network cannot take them all.
MAX_CHECKS_PER_NETWORK = 8
#: Addresses, networks and user names whose failures are kept, each.
_MAX_TRACKED = 10_000

_T = TypeVar("_T")


class PasswordChecks:
    """Where passwords are checked: ``CHECK_THREADS`` threads of their own (the
    loop's default pool stays free for other work), behind a bounded ``Line``."""

    def __init__(self) -> None:
        self._line = Line(CHECK_THREADS)
        self._per_network: Counter[str] = Counter()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._running: set[concurrent.futures.Future[Any]] = set()
        self._idle = asyncio.Event()
        self._closed = False

    async def run(self, network: str, rank: Callable[[], int],
                  check: Callable[..., _T], *args: object) -> _T:
        """``check(*args)`` on a checking thread, once the line lets it in.

        Raises:
            RequestError: ``R0005011`` at once when ``MAX_CHECKS_WAITING`` checks,
            or ``MAX_CHECKS_PER_NETWORK`` from ``network``, are waiting or running.
        """
        if (len(self._line) >= MAX_CHECKS_WAITING or self._closed
                or self._per_network[network] >= MAX_CHECKS_PER_NETWORK):
            raise _busy()
        self._per_network[network] += 1
        try:
            # Fewest failures first, and among networks with as many (none, for a
            # spray from new networks), the one with the fewest checks waiting.
            await self._line.enter(lambda: rank() + self._per_network[network] - 1)
            future = self._submit(check, *args)
            return await asyncio.wrap_future(future)
        finally:
            self._per_network[network] -= 1
            if not self._per_network[network]:
                del self._per_network[network]

    def _submit(self, check: Callable[..., _T], *args: object) -> concurrent.futures.Future[_T]:
        """Start a check; its place in the line is given back when the thread is
        done with it (a cancelled caller does not stop a check under way)."""
        loop = asyncio.get_running_loop()
        if self._closed:  # (let in as the pool was shut down)
            self._line.leave()
            raise _busy()
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                CHECK_THREADS, thread_name_prefix="jobmonitor-password")
        try:
            future = self._pool.submit(check, *args)
        except BaseException:
            self._line.leave()
            raise
        self._running.add(future)
        self._idle.clear()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._done, done))
        return future

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        self._running.discard(future)
        self._line.leave()
        if not self._running:
            self._idle.set()

    async def close(self) -> None:
        """Refuse further checks, wait for those under way, end the threads."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        if self._running:
            await self._idle.wait()
        pool.shutdown(wait=True)  # (the threads have nothing left to do)


class Authenticator:
    """Checks ``_sys_User``/``_sys_Password`` against the configured users."""

    def __init__(self, users: tuple[User, ...]) -> None:
        self._users = {user.name: user for user in users}
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._checks = PasswordChecks()
        self._address_failures = FailureTable(_MAX_TRACKED)
        self._network_failures = FailureTable(_MAX_TRACKED)
        self._name_failures = FailureTable(_MAX_TRACKED)
        #: Addresses with an attempt under way (at most one per connection).
        self._addresses = Turns()
        #: User names tried from networks with failures.
        self._names = Turns()
        self._decoy = hash_password(os.urandom(16).hex()) if users else ""

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def close(self) -> None:
        """Wait for the checks under way and end the checking threads."""
        await self._checks.close()

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
        many jobs at once).  Attempts from a network with failures then take
        turns per user name too (``_paced``).

        Raises:
            RequestError: ``R0005011``, too many checks are waiting.
        """
        key, network = throttled_address(address), throttled_network(address)
        user = self._users.get(name)
        if (user is not None and not self._addresses.busy(key)
                and self._address_failures.entry(key, time.monotonic()) == CLEAN
                and self._remembered(user, password)):
            return user
        async with self._addresses.turn(key):
            await _wait(self._address_penalty(key, network))
            if self._trusted(key, network):
                delay = await self._attempt(user, name, password, key, network)
            else:
                delay = await self._paced(user, name, password, key, network)
        if delay is None:
            return user
        await asyncio.sleep(delay)  # (the next attempt waits for it too: _address_penalty)
        return None

    async def _paced(self, user: User | None, name: str, password: str, key: str,
                     network: str) -> float | None:
        """An attempt from a network with failures: attempts at one user name from
        such networks are checked one at a time (the network with the fewest
        failures first), each once the delay of the name's last failure has
        passed, so that many addresses give no more guesses at one user than one.
        Names are counted whether a user has them or not, alike."""
        name_key = self._name_key(name)
        async with self._names.turn(name_key, self._ranker(network)):
            now = time.monotonic()
            await _wait(penalty(self._name_failures.entry(name_key, now), USER_FREE_FAILURES, now))
            return await self._attempt(user, name, password, key, network)

    async def _attempt(self, user: User | None, name: str, password: str, key: str,
                       network: str) -> float | None:
        """Check and count: None when the password is right, else how long to hold
        the failure's reply."""
        if await self._check(user, password, network):
            self._address_failures.forget(key)
            return None
        now = time.monotonic()
        self._name_failures.record(self._name_key(name), now)
        in_network = self._network_failures.record(network, now)
        count = self._address_failures.record(key, now)
        if count is None:  # no room for the address: it counts as its network
            count = in_network
        return MAX_FAILURE_DELAY_S if count is None else failure_delay(count, FREE_FAILURES)

    def _token(self, user: User, password: str) -> bytes:
        """What is kept of a password that checked out: a digest keyed for this process."""
        return hmac.new(self._key, f"{user.name}\0{password}".encode(), "sha256").digest()

    def _name_key(self, name: str) -> str:
        """What a user name's failures are kept under: a digest, so that names a
        client makes up take little room."""
        return hmac.new(self._key, name.encode(), "sha256").hexdigest()[:32]

    def _remembered(self, user: User, password: str) -> bool:
        known = self._verified.get(user.name)
        return known is not None and hmac.compare_digest(known, self._token(user, password))

    async def _check(self, user: User | None, password: str, network: str) -> bool:
        if user is not None and self._remembered(user, password):
            return True
        # An unknown name costs the same scrypt work as a real user, so that
        # timing does not tell which user names exist.
        stored = self._decoy if user is None else user.password_hash
        right = await self._checks.run(network, self._ranker(network), verify_password,
                                       password, stored)
        if user is None or not right:
            return False
        self._verified[user.name] = self._token(user, password)
        return True

    def _trusted(self, key: str, network: str) -> bool:
        """Whether the address and its network are known to have no failures."""
        now = time.monotonic()
        return (self._address_failures.entry(key, now) == CLEAN
                and self._network_failures.entry(network, now) == CLEAN)

    def _ranker(self, network: str) -> Callable[[], int]:
        """An attempt's rank in a line: its network's failures (fewest first)."""

        def rank() -> int:
            entry = self._network_failures.entry(network, time.monotonic())
            return UNRECORDED if entry is None else entry[0]

        return rank

    def _address_penalty(self, key: str, network: str) -> float:
        """How long an attempt from this address must still wait for the delay of
        the last failure from it (from its network, when the table had no room
        for the address)."""
        now = time.monotonic()
        entry = self._address_failures.entry(key, now)
        if entry is None:
            entry = self._network_failures.entry(network, now)
        return penalty(entry, FREE_FAILURES, now)


def _busy() -> RequestError:
    return RequestError(Reply.SERVER_BUSY, "too many password checks waiting")


async def _wait(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
