"""A blocking facade over ``Client`` for scripts.

``SyncClient`` owns a private event loop (an ``asyncio.Runner``) and runs each
call of the asyncio client on it, so it must not be used from inside a running
event loop.  It is not thread-safe: use one per thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from ..wire import DEFAULT_PORT
from .api import Client
from .connection import Value
from .results import (
    Acknowledged,
    JobInfo,
    JobList,
    JobResult,
    JobStatus,
    NodeInfo,
    Output,
    QueueInfo,
    QueueLength,
    StreamLine,
    TaskLogEntry,
)
from .transaction import Transaction

__all__ = ["SyncClient", "SyncTransaction"]

T = TypeVar("T")


class SyncClient:
    """The same calls as ``Client``, blocking.  Use ``with SyncClient(...) as client:``.

    The methods raise what ``Client``'s raise: ``ReplyError``, ``OSError``,
    ``ProtocolError``; and ``RuntimeError`` when called inside a running
    event loop or after ``close()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **options: Any) -> None:
        self._client = Client(host, port, **options)
        self._runner = asyncio.Runner()
        self._closed = False

    @property
    def client(self) -> Client:
        """The underlying asyncio client (its settings are read and set there)."""
        return self._client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed or _loop_running():
            coro.close()
            raise RuntimeError("SyncClient is closed" if self._closed else
                               "SyncClient cannot be used inside a running event loop; "
                               "use jobmonitor.client.Client")
        return self._runner.run(coro)

    def close(self) -> None:
        """Drop open transactions and close the private loop (idempotent; also
        from inside a running event loop, where it does so from another thread)."""
        if self._closed:
            return
        self._closed = True
        if _loop_running():  # our loop cannot run in this thread now
            closer = threading.Thread(target=self._close_runner, name="jobmonitor-sync-close")
            closer.start()
            closer.join()
        else:
            self._close_runner()

    def _close_runner(self) -> None:
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, command: str, variables: Mapping[str, Value] | None = None,
                doc_variables: Mapping[str, Value] | None = None) -> list[str]:
        """See ``Client.request``."""
        return self._run(self._client.request(command, variables, doc_variables))

    def submit(self, project: str, variables: Mapping[str, Value] | None = None,
               **options: Any) -> SyncTransaction:
        """See ``Client.submit`` (same keyword arguments)."""
        return SyncTransaction(self, self._run(self._client.submit(project, variables, **options)))

    def watch(self, transaction_id: str, from_line: int = 1) -> SyncTransaction:
        """See ``Client.watch``."""
        return SyncTransaction(self, self._run(self._client.watch(transaction_id, from_line)))

    def rerun(self, transaction_id: str, *, monitor: bool = True) -> SyncTransaction:
        """See ``Client.rerun``."""
        return SyncTransaction(self, self._run(self._client.rerun(transaction_id,
                                                                  monitor=monitor)))

    def status(self, transaction_id: str) -> JobStatus:
        """See ``Client.status``."""
        return self._run(self._client.status(transaction_id))

    def info(self, transaction_id: str) -> JobInfo:
        """See ``Client.info``."""
        return self._run(self._client.info(transaction_id))

    def list_jobs(self, *, all: bool = False, user_token: str | None = None,
                  limit: int | None = None, after: str | None = None) -> JobList:
        """See ``Client.list_jobs``."""
        return self._run(self._client.list_jobs(all=all, user_token=user_token, limit=limit,
                                                after=after))

    def iter_jobs(self, *, all: bool = False, user_token: str | None = None,
                  after: str | None = None, page_size: int | None = None) -> Iterator[JobStatus]:
        """See ``Client.iter_jobs``: a request per page, as the loop reaches it."""
        jobs = self._client.iter_jobs(all=all, user_token=user_token, after=after,
                                      page_size=page_size)
        while True:
            try:
                yield self._run(_next(jobs))
            except StopAsyncIteration:
                return

    def outputs(self, transaction_id: str) -> tuple[Output, ...]:
        """See ``Client.outputs``."""
        return self._run(self._client.outputs(transaction_id))

    def cancel(self, transaction_id: str) -> Acknowledged:
        """See ``Client.cancel``."""
        return self._run(self._client.cancel(transaction_id))

    def suspend(self, transaction_id: str) -> Acknowledged:
        """See ``Client.suspend``."""
        return self._run(self._client.suspend(transaction_id))

    def resume(self, transaction_id: str) -> Acknowledged:
        """See ``Client.resume``."""
        return self._run(self._client.resume(transaction_id))

    def delete(self, transaction_id: str) -> Acknowledged:
        """See ``Client.delete``."""
        return self._run(self._client.delete(transaction_id))

    def projects(self) -> list[str]:
        """See ``Client.projects``."""
        return self._run(self._client.projects())

    def queue_length(self) -> QueueLength:
        """See ``Client.queue_length``."""
        return self._run(self._client.queue_length())

    def queues(self) -> list[QueueInfo]:
        """See ``Client.queues``."""
        return self._run(self._client.queues())

    def list_nodes(self) -> list[NodeInfo]:
        """See ``Client.list_nodes``."""
        return self._run(self._client.list_nodes())

    def pause_queue(self, name: str) -> str:
        """See ``Client.pause_queue``."""
        return self._run(self._client.pause_queue(name))

    def resume_queue(self, name: str) -> str:
        """See ``Client.resume_queue``."""
        return self._run(self._client.resume_queue(name))

    def task_log(self) -> list[TaskLogEntry]:
        """See ``Client.task_log``."""
        return self._run(self._client.task_log())

    def restart_server(self) -> str:
        """See ``Client.restart_server``."""
        return self._run(self._client.restart_server())

    def build_string(self) -> str:
        """See ``Client.build_string``."""
        return self._run(self._client.build_string())


async def _next(jobs: AsyncIterator[T]) -> T:
    return await anext(jobs)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SyncTransaction:
    """A blocking ``Transaction``: ``for line in tx``, ``tx.result()``."""

    def __init__(self, owner: SyncClient, transaction: Transaction) -> None:
        self._owner = owner
        self._transaction = transaction

    @property
    def transaction_id(self) -> str:
        return self._transaction.transaction_id

    @property
    def last_line(self) -> int:
        return self._transaction.last_line

    def __iter__(self) -> Iterator[StreamLine]:
        return self

    def __next__(self) -> StreamLine:
        """The next line (see ``Transaction.__anext__`` for what it raises)."""
        try:
            return self._owner._run(self._transaction.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def result(self) -> JobResult:
        """See ``Transaction.result``."""
        return self._owner._run(self._transaction.result())

    def close(self) -> None:
        """Drop the connection; the job runs on.  Idempotent, and nothing to do
        once the ``SyncClient`` is closed (that dropped it)."""
        if self._owner._closed:
            return
        self._owner._run(self._transaction.aclose())

    def __enter__(self) -> SyncTransaction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
