"""HTTP requests and responses as plain values, and errors as problem documents.

A ``Request`` is what the connection read (method, path, query, headers,
body); a handler answers with an ``HttpResponse`` (status, headers, body) or,
for a live stream, an object the connection hands itself to (``events``).
Every refusal is a ``RequestError`` carrying an R code, the same as on the TCP
port, and becomes an ``application/problem+json`` document (RFC 9457) whose
HTTP status ``STATUS_OF`` gives.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..errors import RequestError
from ..wire.codes import Reply

__all__ = ["Request", "HttpResponse", "HttpRefusal", "STATUS_OF", "problem", "json_response",
           "text_response", "negotiate", "PROBLEM_TYPE", "RETRY_AFTER_S"]

#: The HTTP status each R code is answered with (any other error: 400).
STATUS_OF: dict[Reply, int] = {
    Reply.MALFORMED_PACKET: 400,
    Reply.UNSUPPORTED_ENCODING: 415,
    Reply.PACKET_TOO_LARGE: 413,
    Reply.PACKET_TIMEOUT: 408,
    Reply.UNKNOWN_COMMAND: 404,
    Reply.MISSING_VARIABLE: 400,
    Reply.INVALID_VALUE: 400,
    Reply.UNKNOWN_PROJECT: 400,
    Reply.UNKNOWN_TRANSACTION: 404,
    Reply.INVALID_STATE: 409,
    Reply.SERVER_BUSY: 503,
    Reply.NOT_AUTHENTICATED: 401,
    Reply.PERMISSION_DENIED: 403,
    Reply.IDLE_TIMEOUT: 408,
    Reply.INTERNAL_ERROR: 500,
}
#: A problem's ``type``: none of its own (RFC 9457's default), its R code says what it is.
PROBLEM_TYPE = "about:blank"
#: Seconds a client told "busy" should wait before it tries again.
RETRY_AFTER_S = 1
#: Headers on every response: no sniffing, no framing, no referrer, and a policy
#: that lets a page run only its own files (no inline script or style, no CDN).
COMMON_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
     "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
#: The realm browsers show when they ask for a user name and password.
REALM = 'Basic realm="jobmonitor", charset="UTF-8"'


class HttpRefusal(RequestError):
    """A refusal the HTTP side makes itself, with its own status (405, 406, 415...)."""

    def __init__(self, code: Reply, detail: str, status: int,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code, detail)
        self.status = status
        self.headers = headers


@dataclass(slots=True)
class Request:
    """One HTTP request, read whole (bodies are small: at most ``max_packet_bytes``)."""

    method: str
    target: str
    #: Header names in lower case; a repeated header's values joined with ", ".
    headers: dict[str, str]
    body: bytes = b""
    #: The client's address (without the port).
    peer: str = ""
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        raw_path, _, raw_query = self.target.partition("?")
        self.path = unquote(raw_path, errors="replace") if "%" in raw_path else raw_path
        # The last of a repeated parameter wins, as in most servers.
        self.query = (dict(parse_qsl(raw_query, keep_blank_values=True, errors="replace"))
                      if raw_query else {})


@dataclass(slots=True)
class HttpResponse:
    """A whole response: status, headers (besides the common ones) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


def json_response(value: Any, status: int = 200,
                  headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return json_text_response(body, status, headers)


def json_text_response(body: bytes, status: int = 200,
                       headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "application/json"), *(headers or ())], body)


def text_response(text: str | bytes, content_type: str = "text/plain; charset=utf-8",
                  status: int = 200) -> HttpResponse:
    body = text.encode() if isinstance(text, str) else text
    return HttpResponse(status, [("Content-Type", content_type)], body)


def problem(error: RequestError, status: int | None = None) -> HttpResponse:
    """The problem document for a refusal: its R code, its text, and its HTTP status."""
    code = error.code
    headers = list(error.headers) if isinstance(error, HttpRefusal) else []
    if status is None and isinstance(error, HttpRefusal):
        status = error.status
    status = status or STATUS_OF.get(code, 400)
    document = {"type": PROBLEM_TYPE, "title": reason(status).decode(), "status": status,
                "detail": error.reply_text, "code": f"R{int(code):07d}"}
    if status == 401:
        headers.append(("WWW-Authenticate", REALM))
    elif status == 503:
        headers.append(("Retry-After", str(RETRY_AFTER_S)))
    body = json.dumps(document, ensure_ascii=False).encode()
    return HttpResponse(status, [("Content-Type", "application/problem+json"), *headers], body)


def reason(status: int) -> bytes:
    """The reason phrase of a status line."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str | None:
    """The first of ``offered`` media types the ``Accept`` header likes best; the
    first offered when there is no header; None when it refuses them all."""
    if not accept or not accept.strip():
        return offered[0]
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        ranges.append((media.lower(), weight))
    best: tuple[float, str] | None = None
    for choice in offered:
        kind = choice.split("/")[0] + "/*"
        # The most specific range that matches decides this type's weight.
        weights = ([w for m, w in ranges if m == choice] or [w for m, w in ranges if m == kind]
                   or [w for m, w in ranges if m == "*/*"])
        if weights and weights[0] > 0 and (best is None or weights[0] > best[0]):
            best = (weights[0], choice)
    return None if best is None else best[1]


def too_large(max_bytes: int) -> RequestError:
    return RequestError(Reply.PACKET_TOO_LARGE, f"the body is over {max_bytes} bytes")


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The Date header's value, made once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]
