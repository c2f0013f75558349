"""Counting failed logins, and lines in which attempts wait their turn.

Failures are counted against three keys: the address (an IPv6 address's /64),
its network (an IPv4 /24, an IPv6 /48) and the user name tried.  Each table
holds a bounded number of keys and forgets a key only once its failures are
old: evicting a recent one to make room would let a client with enough
addresses wipe out its own record.  A key that finds no room is "unrecorded",
and the caller counts it more strictly (see ``Authenticator``).

A ``Line`` lets a few attempts in at a time and, when a place comes free,
picks the waiting attempt ranked lowest (the one from the network with the
fewest failures), ties in order of arrival.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["FailureTable", "Line", "Turns", "throttled_address", "throttled_network",
           "failure_delay", "FAILURE_MEMORY_S", "MAX_FAILURE_DELAY_S"]

#: The longest a failing address or user name is made to wait.
MAX_FAILURE_DELAY_S = 5.0
#: Failures are forgotten after this long without another.
FAILURE_MEMORY_S = 600.0
#: How a key no table has room for ranks: after every key on record.
UNRECORDED = 1 << 62

#: A key's (failures in a row, time of the last one); (0, 0.0) for none on record.
Entry = tuple[int, float]
CLEAN: Entry = (0, 0.0)


class FailureTable:
    """Recent failures per key, for at most ``limit`` keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Ordered by the time of each key's last failure, oldest first.
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, key: str, now: float) -> Entry | None:
        """The failures on record for ``key``: ``CLEAN`` for none, None when it has
        none on record and the table has no room for it (so it cannot be known)."""
        self._forget_old(now)
        found = self._entries.get(key)
        if found is not None:
            return found
        return None if len(self._entries) >= self.limit else CLEAN

    def record(self, key: str, now: float) -> int | None:
        """Count a failure of ``key``: its failures in a row, or None when the
        table is full of recent failures of other keys."""
        self._forget_old(now)
        count, _ = self._entries.pop(key, CLEAN)
        if not count and len(self._entries) >= self.limit:
            return None
        self._entries[key] = (count + 1, now)
        return count + 1

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def _forget_old(self, now: float) -> None:
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if now - entries[key][1] <= FAILURE_MEMORY_S:
                return
            del entries[key]


def failure_delay(failures: int, free: int) -> float:
    """How long to hold back after the ``failures``-th failure in a row, when the
    first ``free`` cost nothing: 0.25 s, then twice as long each time, up to 5 s."""
    if failures <= free:
        return 0.0
    return min(MAX_FAILURE_DELAY_S, 0.25 * 2.0 ** min(failures - free - 1, 8))


def penalty(entry: Entry | None, free: int, now: float) -> float:
    """How long an attempt must still wait for the delay of the last failure
    ``entry`` records (the longest delay for a key that cannot be known)."""
    if entry is None:
        return MAX_FAILURE_DELAY_S
    count, last = entry
    return last + failure_delay(count, free) - now if count else 0.0


class Line:
    """Attempts waiting for one of ``width`` places.  When a place comes free it
    goes to the waiting attempt whose ``rank()`` is lowest then (ranks may change
    while attempts wait), ties in order of arrival."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.inside = 0
        self._waiting: dict[asyncio.Future[None], Callable[[], int]] = {}

    def __len__(self) -> int:
        """The attempts inside and waiting."""
        return self.inside + len(self._waiting)

    async def enter(self, rank: Callable[[], int]) -> None:
        """Wait for a place (call ``leave`` to give it back)."""
        if self.inside < self.width and not self._waiting:
            self.inside += 1
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[place] = rank
        try:
            await place
        except asyncio.CancelledError:
            if place.cancelled():
                self._waiting.pop(place, None)
            else:  # given a place as it was cancelled: pass it on
                self.leave()
            raise

    def leave(self) -> None:
        waiting = self._waiting
        while waiting:
            place = min(waiting, key=lambda future: waiting[future]())
            del waiting[place]
            if not place.done():  # (one cancelled has not left yet)
                place.set_result(None)  # the place passes on: inside stays
                return
        self.inside -= 1


class Turns:
    """One line per key, one attempt at a time, kept only while in use."""

    def __init__(self) -> None:
        self._lines: dict[str, Line] = {}

    def busy(self, key: str) -> bool:
        return key in self._lines

    @asynccontextmanager
    async def turn(self, key: str, rank: Callable[[], int] = lambda: 0) -> AsyncIterator[None]:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = Line(1)
        try:
            await line.enter(rank)
            try:
                yield
            finally:
                line.leave()
        finally:
            if not len(line) and self._lines.get(key) is line:
                del self._lines[key]


def throttled_address(address: str) -> str:
    """What an address's failures are counted against: an IPv4 address as it is
    (also when written as an IPv4-mapped IPv6 address), an IPv6 address's /64.

    A single IPv6 host usually has a whole /64 to itself (SLAAC, privacy
    addresses): counted per address, it could take a new one for every three
    guesses.
    """
    ip = _ip(address)
    if ip is None or ip.version == 4:
        return str(ip) if ip is not None else address
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def throttled_network(address: str) -> str:
    """The network an address belongs to for counting failures: an IPv4 /24, an
    IPv6 /48 (what one host or one site usually has to pick addresses from)."""
    ip = _ip(address)
    if ip is None:
        return address
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address (an IPv4-mapped IPv6 address as IPv4), None if it is not one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
