"""A job submitted over HTTP: the JSON body of ``POST /api/v1/jobs`` read into
the ``SubmitJob`` packet's job variables, doc variables and job token.  Only
the body's shape is checked here; its values are the packet's to check, as
over TCP."""

from __future__ import annotations

import json
from typing import Any

from ..errors import RequestError
from ..wire.codes import Reply
from ..wire.variables import (
    DELAY_SECONDS,
    JOB_NAME,
    PRIORITY,
    PROJECT_NAME,
    QUEUE_NAME,
    RUN_AT,
    SYSTEM_PREFIX,
)
from .messages import HttpRefusal, Request

__all__ = ["json_object", "submit_variables"]

_SUBMIT_FIELDS = {PROJECT_NAME, JOB_NAME, "Parameters", "DocVariables", "JobToken", "Queue",
                  "Priority", "RunAt", "DelaySeconds"}


def json_object(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HttpRefusal(Reply.UNSUPPORTED_ENCODING,
                          f"send the job as application/json, not {kind[:60] or 'nothing'!r}", 415)
    try:
        value = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(Reply.MALFORMED_PACKET, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(Reply.MALFORMED_PACKET, "the body must be a JSON object")
    return value


def submit_variables(fields: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], str]:
    """The SubmitJob packet's job variables, doc variables and job token."""
    unknown = sorted(set(fields) - _SUBMIT_FIELDS)
    if unknown:
        raise RequestError(Reply.INVALID_VALUE, f"unknown field {unknown[0][:40]!r} (known: "
                                                f"{', '.join(sorted(_SUBMIT_FIELDS))})")
    parameters = _strings(fields.get("Parameters", {}), "Parameters")
    doc_variables = _strings(fields.get("DocVariables", {}), "DocVariables")
    for name in (PROJECT_NAME, JOB_NAME, "JobToken", "Queue", "RunAt"):
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise RequestError(Reply.INVALID_VALUE, f"{name} must be a string")
    # As a packet has them: ProjectName first, then JobName, then the job's own.
    variables = {PROJECT_NAME: fields.get(PROJECT_NAME) or ""}
    if fields.get(JOB_NAME) is not None:
        variables[JOB_NAME] = fields[JOB_NAME]
    for name, value in parameters.items():
        if name.startswith(SYSTEM_PREFIX) or name in variables:
            raise RequestError(Reply.INVALID_VALUE, f"Parameters: {name[:40]!r} is not a job "
                                                    f"parameter (a system variable or a field)")
        variables[name] = value
    variables.update(_placement(fields))
    return variables, doc_variables, (fields.get("JobToken") or "").strip()


def _placement(fields: dict[str, Any]) -> dict[str, str]:
    """The packet's queue, priority and due time variables from the fields that
    name them; their values are checked as the packet's are (in its words)."""
    variables = {}
    for field, name in (("Queue", QUEUE_NAME), ("RunAt", RUN_AT)):
        if fields.get(field) is not None:
            variables[name] = fields[field]
    priority = fields.get("Priority")
    if priority is not None:
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise RequestError(Reply.INVALID_VALUE, "Priority must be a whole number 1 to 9")
        variables[PRIORITY] = str(priority)
    delay = fields.get("DelaySeconds")
    if delay is not None:
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise RequestError(Reply.INVALID_VALUE, "DelaySeconds must be a number")
        variables[DELAY_SECONDS] = repr(delay)  # (NaN and Infinity: refused as text)
    return variables


def _strings(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RequestError(Reply.INVALID_VALUE, f"{name} must be an object of strings")
    return dict(value)
