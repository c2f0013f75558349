"""A job record as readable text, JSON, or XML: the status reply formats.

The JSON and XML forms follow the JobStatus representation of job REST APIs:
``Id``, ``Type``, ``Status``, ``Identity``, ``WorkerId``, ``StatusMessage``,
``Created``/``Updated``/``Completed``, ``Progress``, ``JobData`` and
``Parameters`` (``name=value`` pairs joined by ``;``, with ``\\`` escaping
``\\``, ``;`` and ``=``).  JSON gives ``Status`` as a number, XML as a word.

Two fields follow from the job's state: each output is ``Partial`` when the
job failed or was cancelled (a file it left may be cut short), and the
suggested wait before polling again (``PollAfter``) is given only while the
job can still change.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .records import JobRecord
from .states import JobState

if TYPE_CHECKING:
    from lxml import etree

__all__ = ["FORMATS", "POLL_AFTER_S", "job_dict", "render", "render_list", "render_table",
           "ListRenderer",
           "to_json", "join_parameters", "split_parameters", "iso_time", "progress_text",
           "cell", "outputs_partial", "outputs_header"]

FORMATS = ("text", "json", "xml")
#: Seconds a polling client should wait before asking again.
POLL_AFTER_S = 2
#: What the line layer would escape as ``\\xNN`` (invalid in JSON) but ``json``
#: leaves raw: DEL, the C1 controls and the Unicode line separators.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")
#: What XML 1.0 cannot carry: all but its ``Char`` production (tab, line feed,
#: carriage return, and the rest from the space on, less surrogates, U+FFFE and U+FFFF).
_XML_UNSAFE = re.compile("[^\t\n\r -\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

#: The states in which a job stopped before it completed: what it left is partial.
_CUT_SHORT = {JobState.FAILED: "failed", JobState.CANCELLED: "was cancelled"}


def outputs_partial(record: JobRecord) -> bool:
    """Whether the job's outputs may be incomplete: it failed or was cancelled."""
    return record.status in _CUT_SHORT


def outputs_header(record: JobRecord) -> str:
    """The first line of a RetrieveJob text reply: ``2 outputs``, with
    ``(partial: the job failed)`` or ``(partial: the job was cancelled)`` after
    it when the job stopped before it completed."""
    header = f"{len(record.outputs)} outputs"
    if record.outputs and outputs_partial(record):
        header += f" (partial: the job {_CUT_SHORT[record.status]})"
    return header


def _poll_after(record: JobRecord) -> int | None:
    """Seconds before polling again; None once the job has ended (it will not change)."""
    return None if record.status.is_final else POLL_AFTER_S


def iso_time(timestamp: float | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, or None for no time."""
    if timestamp is None:
        return None
    return _iso_second(math.floor(timestamp))  # (what gmtime does with a fraction)


@functools.lru_cache(maxsize=1024)
def _iso_second(second: int) -> str:
    # Cached: a page of a listing shows thousands of times, many in the same seconds.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace("=", "\\=")


def join_parameters(params: dict[str, str]) -> str:
    """``a=1;b=2``, escaping ``\\``, ``;`` and ``=`` with a backslash."""
    pairs = [f"{key}={value}" for key, value in params.items()]
    text = ";".join(pairs)
    # Only the separators joined in, and no backslash: nothing to escape (the usual case).
    if "\\" not in text and text.count("=") == len(pairs) and text.count(";") == len(pairs) - 1:
        return text
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
    partial = outputs_partial(record)
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
        "JobData": [{"Name": o.name, "Uri": o.uri, "MediaType": o.media_type,
                     "Partial": partial} for o in record.outputs],
        "Parameters": join_parameters(record.params),
        "PollAfter": _poll_after(record),
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


class ListRenderer:
    """The reply text of a ListJobs page in ``form``, made a slice of jobs at a
    time (``add``), so that a caller can give others a turn between slices.

    Text keeps the lines a list had before it had pages (a count, then a row per
    job) and adds ``Next: T...`` only when a page follows; JSON is an object,
    ``Jobs`` and ``Next`` (null on the last page); XML is a ``Jobs`` document of
    ``JobStatus`` elements and ``Next`` (empty on the last page).
    """

    def __init__(self, form: str) -> None:
        self.form = form
        self._count = 0
        self._parts: list[str] = []  # text rows, or each job's JSON
        self._root: etree._Element | None = None
        if form == "xml":
            from lxml import etree

            self._root = etree.Element("Jobs")

    def add(self, records: list[JobRecord]) -> None:
        """Render these jobs, which follow those added before."""
        self._count += len(records)
        if self._root is not None:
            from lxml import etree

            for record in records:
                _xml_fill(etree.SubElement(self._root, "JobStatus"),
                          job_dict(record, numeric_status=False))
        elif self.form == "json":
            self._parts.extend(to_json(job_dict(record)) for record in records)
        else:
            self._parts.extend("\t".join((r.transaction_id, r.status.value, cell(r.project),
                                          cell(r.job_name))) for r in records)

    def text(self, next_after: str | None) -> str:
        """The whole reply; ``next_after`` is the next page's cursor (None: none follows)."""
        if self._root is not None:
            from lxml import etree

            _xml_fill(self._root, {"Next": next_after})
            return etree.tostring(self._root, pretty_print=True, encoding="unicode").rstrip("\n")
        if self.form == "json":  # what to_json makes of the whole object, in pieces
            return f'{{"Jobs":[{",".join(self._parts)}],"Next":{to_json(next_after)}}}'
        rows = [f"{self._count} jobs", *self._parts]
        if next_after is not None:
            rows.append(f"Next: {next_after}")
        return "\n".join(rows)


def render_list(records: list[JobRecord], next_after: str | None, form: str) -> str:
    """The reply text of a ListJobs page in ``form`` in one go (see ``ListRenderer``)."""
    renderer = ListRenderer(form)
    renderer.add(records)
    return renderer.text(next_after)


def to_json(value: Any) -> str:
    """Compact JSON for one reply line that stays JSON on the wire: the characters
    the line layer escapes are written as JSON escapes (``\\u0085``) first."""
    text = _compact_json(value)
    if text.isascii() and "\x7f" not in text:  # (a listing makes thousands: skip the scan)
        return text
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _compact_json_encoder() -> Callable[[Any], str]:
    """What ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` makes,
    by one C encoder kept for good (``json.dumps`` builds one per call, which
    costs more than encoding a job's status).  Without the C accelerator: that."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return functools.partial(json.dumps, separators=(",", ":"), ensure_ascii=False)
    encode = make(None, None, json.encoder.encode_basestring, None, ":", ",", False, False,
                  True)
    return lambda value: "".join(encode(value, 0))


_compact_json = _compact_json_encoder()


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
    poll_after = _poll_after(record)
    if poll_after is not None:
        pairs.append(("Poll after", poll_after))
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


def render_table(rows: list[dict[str, Any]], form: str, *, noun: str, root: str,
                 item: str) -> str:
    """Rows of plain values (``ListNodes``): text (a count of ``noun``, then one
    tab-separated line per row), a JSON array, or XML (``root`` holding one
    ``item`` element per row)."""
    if form == "json":
        return to_json(rows)
    if form == "xml":
        from lxml import etree

        top = etree.Element(root)
        for row in rows:
            _xml_fill(etree.SubElement(top, item), row)
        return etree.tostring(top, pretty_print=True, encoding="unicode").rstrip("\n")
    return "\n".join([f"{len(rows)} {noun}"] + [
        "\t".join(cell(str(value)) for value in row.values()) for row in rows])


def _xml(data: dict[str, Any]) -> str:
    # Imported here: the client reads parameters with this module, and needs no lxml.
    from lxml import etree

    root = etree.Element("JobStatus")
    _xml_fill(root, data)
    return etree.tostring(root, pretty_print=True, encoding="unicode").rstrip("\n")


def _xml_fill(parent: etree._Element, data: dict[str, Any]) -> None:
    from lxml import etree

    for key, value in data.items():
        child = etree.SubElement(parent, key)
        if isinstance(value, dict):
            _xml_fill(child, value)
        elif isinstance(value, list):
            item_tag = {"JobData": "Output", "History": "Event"}.get(key, "Item")
            for item in value:
                _xml_fill(etree.SubElement(child, item_tag), item)
        elif isinstance(value, bool):
            child.text = "true" if value else "false"
        elif value is not None:
            child.text = _xml_safe(str(value))


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (they are escaped in J lines already)."""
    return _XML_UNSAFE.sub("", text)
