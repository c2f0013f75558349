"""The fast path for the usual command packet: regular expressions, no lxml.

Internal to :mod:`jobmonitor.wire.packet`.  A :class:`~jobmonitor.wire.packet.PacketParser`
tries :func:`read_simple` on its first chunk; it reads a whole packet, of at
most 64 KiB, written in a strict, common subset of XML:

- UTF-8 (or ASCII) with no byte-order mark and no character XML forbids, up
  to the root's end tag (what follows it is ignored, as ever);
- leading whitespace, then an XML declaration that the incremental parser would
  read the same way (naming UTF-8, ASCII or no encoding), then processing
  instructions such as ``<?pf_command version="1.0"?>``;
- elements with or without a namespace prefix; on the root only ``name`` and
  ``xmlns`` declarations, on a ``var`` only ``name``, on a section nothing;
  attribute values with no tab or line break;
- values of plain text, with the five predefined entities and character
  references, and whitespace between elements.

For anything else it returns None and the incremental parser reads the same
bytes from the start: comments, CDATA, a DOCTYPE, other entities, text between
elements, duplicate attributes, sections or variables, a root not closed in
this chunk, and every malformed packet, since only that parser words the
errors.  What this accepts that parser accepts too, with the same values:
tests/unit/test_packet_fast.py checks it against that parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from .packet_encoding import (
    ENCODING_ATTRIBUTE,
    ILLEGAL_CHAR,
    ILLEGAL_CHARS,
    PSEUDO_ATTRIBUTES,
    SPACE,
    repeated_pseudo_attribute,
)

__all__ = ["MAX_BYTES", "SMALL_BYTES", "read_simple"]

# Bigger chunks go to the incremental parser, which keeps a failed fast attempt
# cheap and the fast path far below libxml2's limits.  A chunk bigger than
# SMALL_BYTES is tried only if its end holds the root's end tag: a large packet
# often arrives in several chunks, and a match would fail only at the end of
# the first.
MAX_BYTES = 65_536
SMALL_BYTES = 512

# One match of _PACKET checks the whole packet up to the root's end tag;
# smaller expressions then pick the names and values out of the parts it
# captured.  The character classes leave out what XML forbids, so a match
# holds no such character.  Quantifiers are possessive, so that a failed
# match never backtracks far: each piece ends where the next must start.
_S = r"[ \t\r\n]"
_EQUALS = rf"{_S}*+={_S}*+"
# An ASCII name without a colon, well short of libxml2's limit; "xml..." is reserved.
_NCNAME = r"(?![Xx][Mm][Ll])[A-Za-z_][A-Za-z0-9_.-]{0,63}+"
_PREFIX = rf"(?:{_NCNAME}:)?+"  # a namespace prefix and its colon, or nothing
_REFERENCE = r"&(?:lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});"
_DOUBLE, _SINGLE = '"', "'"
# Character data: no markup, and no "]]>", which XML forbids there.
_TEXT = rf"[^<&\]{ILLEGAL_CHARS}]*+(?:(?:{_REFERENCE}|\](?!\]>))[^<&\]{ILLEGAL_CHARS}]*+)*+"


def _value(group: str = "", *, blank: bool = True) -> str:
    """An attribute value in either quotes; its text in ``group`` and ``group_single``."""

    def quoted(quote: str, name: str) -> str:
        # A tab or line break would be normalised to a space: not for the fast path.
        chars = rf"[^{quote}<&\t\r\n{ILLEGAL_CHARS}]"
        first = "" if blank else f"(?! *+{quote})"
        text = rf"{first}{chars}*+(?:{_REFERENCE}{chars}*+)*+"
        return rf"{quote}(?P<{name}>{text}){quote}" if name else f"{quote}{text}{quote}"

    single = f"{group}_single" if group else ""
    return f"(?:{quoted(_DOUBLE, group)}|{quoted(_SINGLE, single)})"


# A namespace name libxml2 takes as it is: no reference or space, not empty,
# and none of the W3C's reserved ones.
_NAMESPACE = r"(?!(?i:[^\"']*www\.w3\.org))[A-Za-z0-9._~:/?#\[\]@!$()*+,;=%-]++"
_XMLNS = rf"{_S}++xmlns(?::{_NCNAME})?{_EQUALS}(?:\"{_NAMESPACE}\"|'{_NAMESPACE}')"
_DECLARATION = (
    # Read as the incremental parser reads it: it ends at the first ">", within its limit.
    rf"<\?xml(?=[^>]{{0,250}}>)(?P<declaration>{PSEUDO_ATTRIBUTES.pattern})>"
)
_PI = rf"<\?{_NCNAME}(?:{_S}[^?{ILLEGAL_CHARS}]*+)?\?>"


def _section(n: str) -> str:
    var = (
        # A var's name may not be blank; one made of references is checked later.
        rf"<(?P<var_prefix{n}>{_PREFIX})var{_S}++name{_EQUALS}{_value(blank=False)}{_S}*+"
        rf"(?:/>|>{_TEXT}</(?P=var_prefix{n})var{_S}*+>)"
    )
    return (
        rf"<(?P<prefix{n}>{_PREFIX})(?P<section{n}>job_variables|doc_variables){_S}*+"
        rf"(?:/>|>(?P<vars{n}>(?:{_S}*+{var})*+{_S}*+)</(?P=prefix{n})(?P=section{n}){_S}*+>)"
        rf"{_S}*+"
    )


_PACKET = re.compile(
    rf"{_S}*+(?:{_DECLARATION})?(?:{_S}*+{_PI})*+{_S}*+<(?P<prefix>{_PREFIX})job_command"
    rf"(?P<attributes>(?:{_XMLNS})*+{_S}++name{_EQUALS}{_value('command')}(?:{_XMLNS})*+)"
    rf"{_S}*+(?:/>|>{_S}*+(?:{_section('1')}(?:{_section('2')})?)?"
    rf"</(?P=prefix)job_command{_S}*+>)",
    re.ASCII,
)
# Within what _PACKET matched: the names of the xmlns attributes, and each
# var's name and text, raw.
_XMLNS_NAME = re.compile(rf"{_S}(xmlns[^ \t\r\n=]*+){_EQUALS}")
_VAR = re.compile(
    rf"<{_PREFIX}var{_S}++name{_EQUALS}"
    rf"[\"']((?<=\")[^\"]*+|(?<=')[^']*+)[\"']{_S}*+(?:/>|>([^<]*+))"
)
_EXPAND = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|[a-z]+);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_EMPTY: Mapping[str, str] = MappingProxyType({})  # read-only, so packets may share it
_UTF8_LABELS = frozenset({"utf-8", "utf8", "utf_8"})
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "us_ascii"})


class _NotSimple(Exception):
    """The packet is not for the fast path after all."""


def read_simple(
    data: bytes,
) -> tuple[str, Mapping[str, str], Mapping[str, str], int] | None:
    """The command, job_variables and doc_variables of a whole, simple packet, and
    where it ends in ``data`` (the offset of the byte after its root's end tag).

    None when ``data`` is not one (see the module docstring).  Never raises.
    """
    if len(data) > SMALL_BYTES and (
        len(data) > MAX_BYTES or data.find(b"job_command", len(data) - SMALL_BYTES) < 0
    ):
        return None  # not all there, most likely: not worth a match
    # Undecodable bytes become lone surrogates, which _PACKET refuses before the
    # root closes; after it they are ignored, as the incremental parser does.
    text = data.decode("utf-8", "surrogateescape")
    match = _PACKET.match(text)
    if match is None:
        return None
    declaration, attributes, command, single, section1, vars1, section2, vars2 = match.group(
        "declaration",
        "attributes",
        "command",
        "command_single",
        "section1",
        "vars1",
        "section2",
        "vars2",
    )
    # (a pseudo-attribute named twice takes two '=': the usual declaration has one)
    if declaration and declaration.count("=") > 1 and repeated_pseudo_attribute(declaration):
        return None  # the incremental parser words this error
    if declaration and "encoding" in declaration:
        label = ENCODING_ATTRIBUTE.search(declaration)
        if label is not None and not _reads_as_utf8(label.group(1), text[: match.end()]):
            return None
    if attributes.count("xmlns") > 1:
        names = _XMLNS_NAME.findall(attributes)
        if len(set(names)) != len(names):
            return None
    if section1 is not None and section1 == section2:
        return None  # the incremental parser words this error
    if command is None:
        command = single
    try:
        if "&" in command:
            command = _EXPAND.sub(_expand_one, command)
        if not command.strip(SPACE):
            return None
        first = _variables(vars1) if vars1 else {}  # None for <job_variables/>
        second = _variables(vars2) if vars2 else {}
    except _NotSimple:
        return None
    if section1 == "doc_variables":  # then section2 is job_variables or absent
        first, second = second, first
    end = match.end()
    if len(text) != len(data):  # not all ASCII: the end in bytes (the match is valid UTF-8)
        end = len(text[:end].encode("utf-8"))
    return command, MappingProxyType(first) if first else _EMPTY, (
        MappingProxyType(second) if second else _EMPTY
    ), end


def _reads_as_utf8(label: str, packet: str) -> bool:
    label = label.lower()
    return label in _UTF8_LABELS or (label in _ASCII_LABELS and packet.isascii())


def _variables(body: str) -> dict[str, str]:
    """One section's variables in document order; _NotSimple for a repeated name."""
    found: list[tuple[str, str]] = _VAR.findall(body)
    if "&" in body or "\r" in body:
        return _careful_variables(found)
    values = dict(found)
    if len(values) != len(found):
        raise _NotSimple
    return values


def _careful_variables(found: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, raw in found:
        if "&" in name:
            name = _EXPAND.sub(_expand_one, name)
            if not name.strip(SPACE):
                raise _NotSimple
        if name in values:
            raise _NotSimple
        if "\r" in raw:  # XML's line-end normalisation comes before references
            raw = raw.replace("\r\n", "\n").replace("\r", "\n")
        values[name] = _EXPAND.sub(_expand_one, raw) if "&" in raw else raw
    return values


def _expand_one(match: re.Match[str]) -> str:
    reference = match.group(1)
    if reference[0] != "#":
        return _ENTITIES[reference]  # _PACKET let only these five through
    code = int(reference[2:], 16) if reference[1] == "x" else int(reference[1:])
    if code > 0x10FFFF or ILLEGAL_CHAR.match(char := chr(code)):
        raise _NotSimple  # libxml2 refuses a reference to a character XML forbids
    return char
