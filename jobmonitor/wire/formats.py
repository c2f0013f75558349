"""A job record as readable text, JSON, or XML: the status reply formats.

The JSON and XML forms follow the JobStatus representation of job REST APIs:
``Id``, ``Type``, ``Status``, ``Identity``, ``WorkerId``, ``StatusMessage``,
``Created``/``Updated``/``Completed``, ``Progress``, ``JobData`` and
``Parameters`` (``name=value`` pairs joined by ``;``, with ``\\`` escaping
``\\``, ``;`` and ``=``).  JSON gives ``Status`` as a number, XML as a word.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from lxml import etree

from .records import JobRecord

__all__ = ["FORMATS", "POLL_AFTER_S", "job_dict", "render", "to_json", "join_parameters",
           "split_parameters", "iso_time", "progress_text", "cell"]

FORMATS = ("text", "json", "xml")
#: Seconds a polling client should wait before asking again.
POLL_AFTER_S = 2
#: What the line layer would escape as ``\\xNN`` (invalid in JSON) but ``json``
#: leaves raw: DEL, the C1 controls and the Unicode line separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, or None for no time."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace("=", "\\=")


def join_parameters(params: dict[str, str]) -> str:
    """``a=1;b=2``, escaping ``\\``, ``;`` and ``=`` with a backslash."""
    return ";".join(f"{_escape(k)}={_escape(v)}" for k, v in params.items())


def split_parameters(text: str) -> dict[str, str]:
    """The inverse of ``join_parameters``."""
    params: dict[str, str] = {}
    key: str | None = None
    part: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            part.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and key is None:
            key, part = "".join(part), []
        elif char == ";":
            _end_pair(params, key, part)
            key, part = None, []
        else:
            part.append(char)
    if text:
        _end_pair(params, key, part)
    return params


def _end_pair(params: dict[str, str], key: str | None, part: list[str]) -> None:
    if key is None:
        params["".join(part)] = ""
    else:
        params[key] = "".join(part)


def progress_text(record: JobRecord) -> str:
    done, total = record.progress_done, record.progress_total
    if not total:
        return f"{done}" if done else ""
    return f"{done}/{total} ({done * 100 // total}%)"


def _percent(record: JobRecord) -> int | None:
    if not record.progress_total:
        return None
    return record.progress_done * 100 // record.progress_total


def job_dict(record: JobRecord, *, history: bool = False, numeric_status: bool = True
             ) -> dict[str, Any]:
    """The JobStatus object of a job (with ``History`` for GetJobInformation)."""
    data: dict[str, Any] = {
        "Id": record.transaction_id,
        "Type": record.project,
        "JobName": record.job_name,
        "Status": record.status.number if numeric_status else record.status.value,
        "Identity": record.identity,
        "WorkerId": record.worker,
        "StatusMessage": record.status_message,
        "Created": iso_time(record.created),
        "Started": iso_time(record.started),
        "Updated": iso_time(record.updated),
        "Completed": iso_time(record.completed),
        "Estimated": iso_time(record.estimated),
        "Progress": {"Done": record.progress_done, "Total": record.progress_total,
                     "Percent": _percent(record), "Message": record.progress_message},
        "JobData": [{"Name": o.name, "Uri": o.uri, "MediaType": o.media_type}
                    for o in record.outputs],
        "Parameters": join_parameters(record.params),
        "PollAfter": POLL_AFTER_S,
        "Lines": record.line_count,
        "Queue": record.queue,
        "Priority": record.priority,
        "Due": iso_time(record.run_at),
        "Schedule": record.schedule,
    }
    if history:
        data["History"] = [{"Stage": e.stage, "Status": e.status,
                            "Timestamp": iso_time(e.timestamp), "Date": iso_time(e.date),
                            "Info": e.info} for e in record.history]
    return data


def render(record: JobRecord, form: str, *, history: bool = False) -> str:
    """The reply text of GetJobStatus / GetJobInformation in ``form``."""
    if form == "json":
        return to_json(job_dict(record, history=history))
    if form == "xml":
        return _xml(job_dict(record, history=history, numeric_status=False))
    return _text(record, history=history)


def to_json(value: Any) -> str:
    """Compact JSON for one reply line that stays JSON on the wire: the characters
    the line layer escapes are written as JSON escapes (``\\u0085``) first."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _text(record: JobRecord, *, history: bool) -> str:
    pairs: list[tuple[str, object]] = [
        ("Transaction", record.transaction_id),
        ("Project", record.project),
        ("Job name", record.job_name),
        ("Status", record.status.value),
        ("Progress", progress_text(record)),
        ("Created", iso_time(record.created)),
        ("Started", iso_time(record.started)),
        ("Updated", iso_time(record.updated)),
        ("Completed", iso_time(record.completed)),
        ("Identity", record.identity),
        ("Lines", record.line_count),
    ]
    if record.estimated is not None:
        pairs.append(("Estimated", iso_time(record.estimated)))
    pairs += [("Queue", record.queue), ("Priority", record.priority)]
    if record.run_at is not None:
        pairs.append(("Due", iso_time(record.run_at)))
    if record.schedule is not None:
        pairs.append(("Schedule", record.schedule))
    if history:
        pairs.append(("Parameters", join_parameters(record.params)))
        pairs.extend(("Output", "\t".join((cell(o.name), cell(o.uri), cell(o.media_type or ""))))
                     for o in record.outputs)
        pairs.extend(("History", _event_text(e)) for e in record.history)
    pairs.append(("Last message", record.status_message))
    pairs.append(("Poll after", POLL_AFTER_S))
    return key_values(pairs)


def _event_text(event: Any) -> str:
    parts = [iso_time(event.timestamp) or "", event.stage, event.status]
    if event.date is not None:
        parts.append(iso_time(event.date) or "")
    if event.info:
        parts.append(event.info)
    return " ".join(parts)


def key_values(pairs: list[tuple[str, object]]) -> str:
    """``Key: value`` lines; a value's own line breaks are sent as ``\\n``."""
    return "\n".join(f"{key}: {_one_line(value)}" for key, value in pairs)


def _one_line(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cell(text: str) -> str:
    """A value in a tab-separated row: its tabs and line breaks sent as ``\\t``,
    ``\\n`` and ``\\r``, so that it can neither add a field nor forge a row."""
    return _one_line(text).replace("\t", "\\t")


def _xml(data: dict[str, Any]) -> str:
    root = etree.Element("JobStatus")
    _xml_fill(root, data)
    return etree.tostring(root, pretty_print=True, encoding="unicode").rstrip("\n")


def _xml_fill(parent: etree._Element, data: dict[str, Any]) -> None:
    for key, value in data.items():
        child = etree.SubElement(parent, key)
        if isinstance(value, dict):
            _xml_fill(child, value)
        elif isinstance(value, list):
            item_tag = {"JobData": "Output", "History": "Event"}.get(key, "Item")
            for item in value:
                _xml_fill(etree.SubElement(child, item_tag), item)
        elif value is not None:
            child.text = _xml_safe(str(value))


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (they are escaped in J lines already)."""
    return "".join(c for c in text if c in "\t\n\r" or (c >= " " and c not in "\ufffe\uffff"
                                                          and not "\ud800" <= c <= "\udfff"))
