"""Reading where and when a submitted job runs: ``_sys_QueueName``, ``_sys_Priority``,
``_sys_RunAt`` and ``_sys_DelaySeconds`` (issue 20).

Each bad value is refused with one ``R0005007`` reply that names the variable,
says what it must be and quotes (clipped) what came.
"""

from __future__ import annotations

import datetime as dt
import re

from ..engine.queues import Placement
from ..errors import RequestError
from ..queueing import DEFAULT_PRIORITY, queue_name_refusal
from ..wire.codes import Reply
from ..wire.lines import clip
from ..wire.packet import Packet
from ..wire.variables import DELAY_SECONDS, PRIORITY, QUEUE_NAME, RUN_AT

__all__ = ["placement_of", "queue_name_of"]

#: Seconds, with up to 6 decimals; at most 9 digits (some 31 years).
_SECONDS = re.compile(r"\d{1,9}(\.\d{1,6})?")
#: Longer than any ISO 8601 time with a zone: refused before parsing.
_MOST_TIME_CHARS = 40


def placement_of(packet: Packet) -> Placement | None:
    """The placement a ``SubmitJob`` asks for, or None when it names none.

    Raises:
        RequestError: INVALID_VALUE for a bad value (one reply, for the first).
    """
    variables = packet.variables
    if (QUEUE_NAME not in variables and PRIORITY not in variables and RUN_AT not in variables
            and DELAY_SECONDS not in variables):  # (the common case: four look-ups)
        return None
    queue = variables.get(QUEUE_NAME, "").strip() or None
    if queue is not None:
        queue = queue_name_of(packet)
    run_at = _run_at(variables.get(RUN_AT, "").strip())
    delay_s = _delay(variables.get(DELAY_SECONDS, "").strip())
    if run_at is not None and delay_s is not None:
        raise RequestError(Reply.INVALID_VALUE,
                           f"give {RUN_AT} or {DELAY_SECONDS}, not both")
    return Placement(queue, _priority(variables.get(PRIORITY, "").strip()), run_at, delay_s)


def queue_name_of(packet: Packet) -> str:
    """``_sys_QueueName``, checked.

    Raises:
        RequestError: MISSING_VARIABLE when absent or blank; INVALID_VALUE when
        it cannot name a queue.
    """
    name = packet.variables.get(QUEUE_NAME, "").strip()
    if not name:
        raise RequestError(Reply.MISSING_VARIABLE, QUEUE_NAME + packet.value_hint(QUEUE_NAME))
    refusal = queue_name_refusal(name)
    if refusal is not None:
        raise RequestError(Reply.INVALID_VALUE, f"{QUEUE_NAME} {refusal}")
    return name


def _priority(raw: str) -> int:
    if not raw:
        return DEFAULT_PRIORITY
    if len(raw) == 1 and "1" <= raw <= "9":
        return int(raw)
    raise RequestError(Reply.INVALID_VALUE,
                       f"{PRIORITY} must be a whole number 1 to 9, got {clip(raw)!r}")


def _run_at(raw: str) -> float | None:
    if not raw:
        return None
    if len(raw) <= _MOST_TIME_CHARS and ("T" in raw or " " in raw):
        try:
            when = dt.datetime.fromisoformat(raw)
            if when.tzinfo is not None:
                return when.timestamp()
        except (ValueError, OverflowError):
            pass
    raise RequestError(Reply.INVALID_VALUE,
                       f"{RUN_AT} must be an ISO 8601 time with a time zone, such as "
                       f"2026-12-24T06:00:00Z, got {clip(raw)!r}")


def _delay(raw: str) -> float | None:
    if not raw:
        return None
    if not (raw.isascii() and _SECONDS.fullmatch(raw)):
        raise RequestError(Reply.INVALID_VALUE,
                           f"{DELAY_SECONDS} must be a number of seconds of 0 or more, "
                           f"got {clip(raw)!r}")
    return float(raw)
