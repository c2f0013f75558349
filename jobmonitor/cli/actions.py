"""What each client command does once its options are read: the stream
commands (``submit``, ``rerun``, ``watch``, ``list``) run on an event loop
with a ``Client``; the others ask their question on a plain socket through
their ``Endpoint`` and never import asyncio (start-up is most of their time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..wire.variables import AFTER, FILTER, FORMAT, QUEUE_NAME, TRANSACTION_ID, USER_TOKEN
from .output import JsonPrinter, LivePrinter, PlainPrinter, StreamPrinter, exit_status
from .tables import job_table, print_lines, table

if TYPE_CHECKING:
    from ..client import Client, Reattach, Transaction
    from ..wire.states import JobState
    from .endpoint import Endpoint

__all__ = ["Action", "AskAction", "StreamAction"]

#: What a command does: asks its ``Endpoint`` and returns the exit status, or (an
#: ``async def``) runs on an event loop with a ``Client``.
AskAction = Callable[["Endpoint", argparse.Namespace], int]
StreamAction = Callable[["Client", argparse.Namespace], Coroutine[Any, Any, int]]
Action = AskAction | StreamAction


def _printer(args: argparse.Namespace) -> StreamPrinter:
    if args.json:
        return JsonPrinter(sys.stdout, sys.stderr)
    live = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    return (LivePrinter if live else PlainPrinter)(sys.stdout, sys.stderr)


async def submit(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.submit(
        args.project, dict(args.variables), job_name=args.job_name, monitor=args.monitor,
        user_token=args.user_token, job_token=args.job_token, queue=args.queue,
        priority=args.priority, run_at=args.run_at, delay_s=args.delay_s)
    return await _started(client, transaction, args, "submitted")


async def rerun(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.rerun(args.transaction_id, monitor=args.monitor)
    return await _started(client, transaction, args, "rerun")


async def _started(client: Client, transaction: Transaction, args: argparse.Namespace,
                   event: str) -> int:
    """A new job's ID (``--no-monitor``), or its stream to its end."""
    if not args.monitor:
        if args.json:
            JsonPrinter(sys.stdout).begin(transaction.transaction_id, event)
        else:
            print(transaction.transaction_id, flush=True)
        return 0
    return await _follow(client, transaction, _printer(args), event)


async def watch(client: Client, args: argparse.Namespace) -> int:
    transaction = await client.watch(args.transaction_id, args.from_line)
    return await _follow(client, transaction, _printer(args), "watching")


async def _follow(client: Client, transaction: Transaction, printer: StreamPrinter,
                  event: str) -> int:
    client.on_reattach = lambda reattach: printer.notice(_reattach_notice(client, reattach))
    try:
        async with transaction:
            printer.begin(transaction.transaction_id, event)
            async for line in transaction:
                printer.line(line)
            result = await transaction.result()
        printer.result(result)
    finally:
        printer.close()
    return exit_status(result)


def _reattach_notice(client: Client, reattach: Reattach) -> str:
    """The stderr line for a transaction that lost its connection, or is back."""
    if reattach.reattached:
        return f"jobmonitor: re-attached to {reattach.transaction_id}"
    return (f"jobmonitor: lost the connection to {client.host}:{client.port}; re-attaching "
            f"to {reattach.transaction_id} from line {reattach.from_line} "
            f"(for up to {client.reconnect_timeout_s:g} s)")


def formatted(command: str) -> Action:
    def show(endpoint: Endpoint, args: argparse.Namespace) -> int:
        print_lines(endpoint.request(command, {TRANSACTION_ID: args.transaction_id,
                                                FORMAT: args.format}))
        return 0

    return show


#: The command each control command sends.
_CONTROLS = {"cancel": "CancelJob", "suspend": "SuspendJob", "resume": "ResumeJob",
             "delete": "DeleteJob"}


def job_control(name: str) -> Action:
    def control(endpoint: Endpoint, args: argparse.Namespace) -> int:
        text = "\n".join(endpoint.request(_CONTROLS[name],
                                          {TRANSACTION_ID: args.transaction_id}))
        if text and " " not in text:  # CancelJob answers with the transaction ID alone
            text += f" {name} requested"
        print_lines([text])
        return 0

    return control


async def list_jobs(client: Client, args: argparse.Namespace) -> int:
    # (--status and --project are kept here: ListJobs lists by owner and page only)
    if args.json:
        print_lines([await _jobs_json(client, args.all, args.user_token,
                                       args.status, args.project)])
        return 0
    jobs = [job async for job in client.iter_jobs(all=args.all, user_token=args.user_token)
            if (args.status is None or job.status is args.status)
            and (args.project is None or job.project == args.project)]
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print_lines(job_table(jobs, width))
    return 0


async def _jobs_json(client: Client, every: bool, user_token: str | None,
                     status: JobState | None = None, project: str | None = None) -> str:
    """The jobs of every page as one JSON list: what the server sent before its
    list had pages (only those in ``status`` and of ``project``, when given)."""
    from ..client.decoding import job_page_from_json, load_json
    from ..wire.formats import to_json

    variables = {FILTER: "all" if every else "active", FORMAT: "json"}
    if user_token:
        variables[USER_TOKEN] = user_token
    items: list[str] = []
    after: str | None = None
    while True:
        cursor = {AFTER: after} if after else {}
        reply = load_json("\n".join(await client.request("ListJobs", {**variables, **cursor})))
        jobs, after = job_page_from_json(reply, after)
        items.extend(to_json(job) for job in jobs
                     if (status is None or job.get("Status") == status.number)
                     and (project is None or job.get("Type") == project))
        if after is None:
            return f"[{','.join(items)}]"


def outputs(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("RetrieveJob", {TRANSACTION_ID: args.transaction_id,
                                             FORMAT: "json"})
    if args.json:
        print_lines(lines)
        return 0
    from ..client.decoding import load_json, outputs_from_json

    outputs = outputs_from_json(load_json("\n".join(lines)))
    print_lines(table(("NAME", "MEDIA TYPE", "URI"),
                       [(o.name, o.media_type or "-", o.uri) for o in outputs]))
    if any(output.partial for output in outputs):
        # On stderr, where a person sees it and a script reading the table does not trip.
        print("jobmonitor: the job failed or was cancelled: these outputs are partial",
              file=sys.stderr)
    return 0


def projects(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.decoding import projects_from_lines

    print_lines(projects_from_lines(endpoint.request("ListProjects")))
    return 0


def queue(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.decoding import queue_length_from_lines

    counts = queue_length_from_lines(endpoint.request("GetJobQueueLen"))
    print_lines([f"Queued: {counts.queued}", f"Running: {counts.running}"])
    return 0


def queues(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("ListQueues", {FORMAT: "json"})
    if args.json:
        print_lines(lines)
        return 0
    from ..client.decoding import load_json, queues_from_json

    queues = queues_from_json(load_json("\n".join(lines)))
    print_lines(table(("QUEUE", "WAITING", "RUNNING", "MAX RUNNING", "PAUSED", "SCHEDULED"), [
        (q.name, str(q.waiting), str(q.running), str(q.max_running),
         "yes" if q.paused else "no", str(q.scheduled)) for q in queues]))
    return 0


def nodes(endpoint: Endpoint, args: argparse.Namespace) -> int:
    lines = endpoint.request("ListNodes", {FORMAT: "json"})
    if args.json:
        print_lines(lines)
        return 0
    from ..client.decoding import load_json, nodes_from_json

    nodes = nodes_from_json(load_json("\n".join(lines)))
    print_lines(table(("NODE", "ADDRESS", "STARTED", "HEARTBEAT AGE", "RUNNING"), [
        (n.name, n.address, n.started, f"{n.heartbeat_age_s:.1f} s", str(n.running))
        for n in nodes]))
    return 0


#: The command each queue control command sends.
_QUEUE_CONTROLS = {"pause-queue": "PauseQueue", "resume-queue": "ResumeQueue"}


def queue_control(name: str) -> Action:
    def control(endpoint: Endpoint, args: argparse.Namespace) -> int:
        print_lines(["\n".join(endpoint.request(_QUEUE_CONTROLS[name],
                                                 {QUEUE_NAME: args.queue}))])
        return 0

    return control


def log(endpoint: Endpoint, args: argparse.Namespace) -> int:
    from ..client.decoding import task_log_from_lines

    entries = task_log_from_lines(endpoint.request("GetTaskLog"))
    print_lines(table(("TIME", "TRANSACTION", "PROJECT", "EVENT"), [
        (e.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if e.timestamp else "-",
         e.transaction_id, e.project, e.event) for e in entries]))
    return 0


def restart_server(endpoint: Endpoint, args: argparse.Namespace) -> int:
    # As long as running jobs take to finish (the server's grace): no reply timeout.
    print_lines(["\n".join(endpoint.request("RestartServer", reply_timeout_s=None))])
    return 0


