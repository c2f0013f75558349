"""The jobmonitor client: submit jobs, follow their status lines, ask about them.

::

    from jobmonitor.client import connect

    async with await connect("127.0.0.1", 7400) as client:
        tx = await client.submit("count", {"Count": "3"}, job_name="demo")
        async for line in tx:
            print(line.code, line.text, line.is_error)
        print((await tx.result()).outcome)

Layers: ``results`` (typed results), ``decoding`` (replies read into them)
and ``replies`` (one reply's lines), all three sans-I/O; ``connection`` (a
packet on a connection, built with ``wire.packet_build`` and read with
``wire.lines.parse_line``), ``kept`` (connections kept from one call to the
next, replaced when the server closed them), ``transaction`` (a stream that
re-attaches after a drop), ``api`` (``Client``) and ``sync`` (``SyncClient``
for blocking code); ``blocking`` asks one question on a plain socket, without
asyncio (the ``jobmonitor`` command's one-shot commands).  The names below are
imported on first use.
The client imports only the wire layer and ``errors`` of the rest of the
package: nothing of the server's side.

Errors: an error reply raises ``ReplyError`` (``.code``, ``.text``); an
unreachable server raises ``OSError``; an answer outside the protocol raises
``ProtocolError``.

The library prints nothing: ``Client(on_reattach=...)`` is how a program
hears that a transaction lost its connection and is re-attaching (the
``jobmonitor`` command prints a line on stderr for each).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..errors import ProtocolError, ReplyError
from ..wire.states import JobState, Outcome

if TYPE_CHECKING:
    from .api import Client, connect
    from .results import (
        Acknowledged,
        HistoryEntry,
        JobInfo,
        JobList,
        JobResult,
        JobStatus,
        NodeInfo,
        Output,
        Progress,
        QueueInfo,
        QueueLength,
        Reattach,
        StreamLine,
        TaskLogEntry,
    )
    from .sync import SyncClient, SyncTransaction
    from .transaction import Transaction

#: Names imported on first use, from the module that defines each: asyncio and
#: the result types cost a one-shot command (``blocking``) most of its start-up.
_LAZY = {
    **dict.fromkeys(("Client", "connect"), ".api"),
    **dict.fromkeys(("Acknowledged", "HistoryEntry", "JobInfo", "JobList", "JobResult",
                     "JobStatus", "NodeInfo", "Output", "Progress", "QueueInfo", "QueueLength",
                     "Reattach", "StreamLine", "TaskLogEntry"), ".results"),
    **dict.fromkeys(("SyncClient", "SyncTransaction"), ".sync"),
    "Transaction": ".transaction",
}

__all__ = [
    "connect",
    "Client",
    "Transaction",
    "SyncClient",
    "SyncTransaction",
    "StreamLine",
    "JobResult",
    "Reattach",
    "JobStatus",
    "JobInfo",
    "JobList",
    "Progress",
    "Output",
    "HistoryEntry",
    "Acknowledged",
    "QueueLength",
    "QueueInfo",
    "NodeInfo",
    "TaskLogEntry",
    "JobState",
    "Outcome",
    "ReplyError",
    "ProtocolError",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
