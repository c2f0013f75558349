"""Building command packets, for clients and tests: the reverse of
:mod:`jobmonitor.wire.packet`.

:func:`build_packet` is re-exported by :mod:`jobmonitor.wire.packet`; the
client imports it from here, so as not to load the parser.  Every name and
value is escaped as XML requires, so any text XML can carry reads back
exactly.  Written with the standard library, byte for byte what lxml writes
for the same tree (``tests/unit/test_packet_build.py`` compares them): a
client command starts without importing lxml.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping

from .packet_encoding import ILLEGAL_CHAR, SPACE

__all__ = ["build_packet"]

_PAGEFLEX_NAMESPACE = "http://www.pageflex.com/schemas"
_BUILT_PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n<?pf_command version="1.0"?>\n'
#: What must be escaped in text (a CR too: a parser reads a raw one as a line feed)
#: and, besides, in an attribute value (a parser reads a raw tab or line break as
#: a space, and its quote ends the value).
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ATTRIBUTE_ESCAPES = {**_TEXT_ESCAPES, '"': "&quot;", "\t": "&#9;", "\n": "&#10;"}
_TEXT_SPECIAL = re.compile("[&<>\r]")
_ATTRIBUTE_SPECIAL = re.compile('[&<>\r"\t\n]')


def _check_xml_text(what: str, text: str) -> None:
    illegal = ILLEGAL_CHAR.search(text)
    if illegal is not None:
        raise ValueError(f"{what} contains U+{ord(illegal.group()):04X}, which XML cannot carry")


def _text(what: str, value: object) -> str:
    """A variable's value as packet text: a string as it is, a bool as ``true`` or
    ``false`` (what ``_sys_ClientJobMonitor`` takes), any other real number as
    ``str()`` writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Real):
        return str(value)
    raise TypeError(f"{what} must be a string, a number or a bool, not "
                    f"{type(value).__name__}")


def _check_name(what: str, name: str) -> None:
    if not name.strip(SPACE):
        raise ValueError(f"{what} must not be empty")
    _check_xml_text(what, name)


def build_packet(
    command: str,
    variables: Mapping[str, object] | None = None,
    doc_variables: Mapping[str, object] | None = None,
    *,
    namespace: str | None = _PAGEFLEX_NAMESPACE,
) -> bytes:
    """Build a UTF-8 command packet that :class:`~jobmonitor.wire.packet.PacketParser` reads back.

    ``job_variables`` is always written; ``doc_variables`` only when given and
    not empty.  With ``namespace=None`` the elements have no namespace.  Values
    are strings; a number is sent as ``str()`` writes it and a bool as ``true``
    or ``false``.

    Raises:
        ValueError: an empty command or variable name, or a character XML
            cannot carry (most C0 controls, lone surrogates, U+FFFE, U+FFFF).
        TypeError: a value that is not a string, a number or a bool.
    """
    _check_name("the command", command)
    prefix = "pfjob:" if namespace else ""
    declaration = f' xmlns:pfjob="{_attribute(namespace)}"' if namespace else ""
    parts = [f'<{prefix}job_command{declaration} name="{_attribute(command)}">']
    sections = [("job_variables", variables or {})]
    if doc_variables:
        sections.append(("doc_variables", doc_variables))
    for section_name, values in sections:
        items = []
        for name, value in values.items():
            _check_name(f"variable name {name!r}", name)
            text = _text(f"the value of variable {name!r}", value)
            _check_xml_text(f"the value of variable {name!r}", text)
            items.append(f'<{prefix}var name="{_attribute(name)}">'
                         f'{_TEXT_SPECIAL.sub(_escaped_text, text)}</{prefix}var>')
        tag = prefix + section_name
        parts.append(f"<{tag}>{''.join(items)}</{tag}>" if items else f"<{tag}/>")
    parts.append(f"</{prefix}job_command>\n")
    return _BUILT_PROLOG + "".join(parts).encode("utf-8")


def _escaped_text(match: re.Match[str]) -> str:
    return _TEXT_ESCAPES[match.group()]


def _attribute(value: str) -> str:
    return _ATTRIBUTE_SPECIAL.sub(lambda match: _ATTRIBUTE_ESCAPES[match.group()], value)
