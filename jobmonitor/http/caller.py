"""Whom an HTTP request speaks for, and whether it may change anything: its
Basic credentials as the packet's ``_sys_User``/``_sys_Password``, and the
refusal of a state-changing request that another site's page sent."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from ..errors import RequestError
from ..wire.codes import Reply
from ..wire.variables import PASSWORD, USER
from .messages import Request

__all__ = ["UNSAFE_METHODS", "credentials", "same_origin"]

#: Methods that change something: refused when another site's page sends them.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def credentials(request: Request) -> dict[str, str]:
    """``_sys_User`` and ``_sys_Password`` from an ``Authorization: Basic`` header
    (none when there is no such header, or it cannot be read)."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return {}
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return {}
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    return {USER: user, PASSWORD: password} if sep else {}


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that another site's page sent (Basic
    credentials go with it by themselves, so it must not act on them).

    Raises:
        RequestError: PERMISSION_DENIED.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        raise RequestError(Reply.PERMISSION_DENIED, f"cross-site request refused ({site})")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "").strip().lower()
        if urlsplit(origin.strip()).netloc.lower() != host or not host:
            raise RequestError(Reply.PERMISSION_DENIED,
                               f"cross-origin request refused (Origin {origin[:80]!r})")
