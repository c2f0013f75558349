"""A command packet's encoding: what its first bytes and its XML declaration say.

Internal to :mod:`jobmonitor.wire.packet`, whose parser runs these steps before any
XML is read: :func:`sniff` finds a byte-order mark or the zero bytes of UTF-16
or UTF-32; otherwise :func:`read_declaration` reads the XML declaration by
hand (the vendor's ``<?xml version="1.0">`` has no ``?``) and
:func:`narrow_codec` turns the encoding it names into a codec, one of
:data:`ENCODINGS`: plain text encodings only, so that no escape or transform
codec (``raw_unicode_escape`` would read ``\\u003c`` as ``<``) decides what the
markup is.  Also here:
what XML text may hold (:data:`SPACE`, :data:`ILLEGAL_CHAR`), which the
decoder, the fast path and the builder all check.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import functools
import pkgutil
import re
from collections.abc import Callable

from ..errors import PacketError
from .codes import Reply
from .lines import clip

__all__ = [
    "ENCODINGS",
    "SPACE",
    "ILLEGAL_CHARS",
    "ILLEGAL_CHAR",
    "PSEUDO_ATTRIBUTES",
    "ENCODING_ATTRIBUTE",
    "MAX_DECLARATION",
    "sniff",
    "lookup_codec",
    "listed_codec",
    "repeated_pseudo_attribute",
    "is_wide",
    "narrow_codec",
    "read_declaration",
    "decoder_class",
]

# Characters XML 1.0 cannot carry, even as character references: a range for
# a regular expression's character class, and that class.
ILLEGAL_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
ILLEGAL_CHAR = re.compile(f"[{ILLEGAL_CHARS}]")
SPACE = " \t\r\n"
# The declaration's pseudo-attributes: version="1.0" encoding="..." standalone="yes".
PSEUDO_ATTRIBUTES = re.compile(
    r"""(?:[ \t\r\n]+[A-Za-z]+[ \t\r\n]*=[ \t\r\n]*(?:"[\w.:\- ]*"|'[\w.:\- ]*'))*[ \t\r\n]*\??""",
    re.ASCII,
)
ENCODING_ATTRIBUTE = re.compile(r"""[ \t\r\n]encoding[ \t\r\n]*=[ \t\r\n]*["']([^"']*)["']""")
# A pseudo-attribute's name (a value holds no "=", so this finds names only).
_PSEUDO_NAME = re.compile(r"[ \t\r\n]([A-Za-z]+)[ \t\r\n]*=")
_ENCODING_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,39}")
# Longer than any real declaration; bounds what we hold while waiting for its ">".
MAX_DECLARATION = 256
# Printable ASCII and XML's whitespace: an encoding that does not decode these
# bytes to themselves cannot be named by an ASCII declaration.  The backslash
# is doubled so that the escape codecs fail the test without a warning.
_ASCII_SAMPLE = "".join(map(chr, range(0x20, 0x7F))).replace("\\", "\\\\") + SPACE

# Byte patterns that start a packet, longest first: byte-order marks, then
# "<" or whitespace in the wide encodings (a popular client sends UTF-16LE
# without a BOM).  The number is the length of the BOM to drop.
_SNIFF_TABLE: list[tuple[bytes, str, int]] = [
    (b"\xff\xfe\x00\x00", "utf-32-le", 4),
    (b"\x00\x00\xfe\xff", "utf-32-be", 4),
    *((c.encode("utf-32-le"), "utf-32-le", 0) for c in "<" + SPACE),
    *((c.encode("utf-32-be"), "utf-32-be", 0) for c in "<" + SPACE),
    (b"\xef\xbb\xbf", "utf-8", 3),
    (b"\xff\xfe", "utf-16-le", 2),
    (b"\xfe\xff", "utf-16-be", 2),
    *((c.encode("utf-16-le"), "utf-16-le", 0) for c in "<" + SPACE),
    *((c.encode("utf-16-be"), "utf-16-be", 0) for c in "<" + SPACE),
]
_WIDE_FIRST_BYTES = frozenset(pattern[0] for pattern, _, _ in _SNIFF_TABLE if pattern[1])


def sniff(head: bytes) -> tuple[str, int] | None:
    """The encoding the first bytes prove and the BOM's length; None: need more.

    The encoding is "" for an ASCII-compatible packet: its declaration decides.
    """
    if len(head) >= 2 and head[0] not in _WIDE_FIRST_BYTES and head[1]:
        return "", 0  # every pattern has a zero second byte or one of those first bytes
    for pattern, codec, bom_length in _SNIFF_TABLE:
        if len(head) < len(pattern) and pattern.startswith(head):
            return None  # this pattern may still match once more bytes arrive
        if head.startswith(pattern):
            return codec, bom_length
    return "", 0  # ASCII-compatible; the declaration may name the encoding


@functools.lru_cache(maxsize=1)
def _known_encodings() -> frozenset[str]:
    """The normalized names the standard library's codecs go by: its aliases and
    the modules of its ``encodings`` package."""
    aliases = encodings.aliases.aliases
    modules = (module.name for module in pkgutil.iter_modules(encodings.__path__))
    return frozenset([*aliases, *aliases.values(), *modules])


@functools.lru_cache(maxsize=64)  # bounded: the names come from peers
def lookup_codec(name: str) -> str:
    """The canonical codec name for a declared encoding name.

    Only a name the standard library knows (as ``encodings.normalize_encoding``
    spells it) reaches ``codecs.lookup``, and in that one spelling: the
    standard library remembers every name it was asked for, found or not, for
    the life of the process, so a peer's made-up names (``x1``, ``x2``, ...) or
    spellings (``utf--8``, ``utf---8``, ...) would each take memory for good.

    Raises:
        PacketError: UNSUPPORTED_ENCODING for a name Python does not know.
    """
    if _ENCODING_NAME.fullmatch(name):
        key = encodings.normalize_encoding(name.lower())
        known = _known_encodings()
        if key not in known:
            key = key.replace(".", "_")  # as the standard library's search tries it,
            if key not in encodings.aliases.aliases:  # for an alias only
                key = ""
        if key:
            try:
                return codecs.lookup(key).name
            except LookupError:
                pass
    raise PacketError(Reply.UNSUPPORTED_ENCODING, f'unknown encoding "{clip(name)}"')


#: The encodings a packet may be in, as codecs.lookup names them (docs/protocol.md
#: lists them with their usual labels): Unicode, ASCII, ISO 8859, the Windows code
#: pages 1250-1258, and the usual Japanese, Chinese and Korean ones.
ENCODINGS = frozenset({
    "utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "ascii",
    *(f"iso8859-{part}" for part in (*range(1, 12), *range(13, 17))),  # (there is no 12)
    *(f"cp{page}" for page in range(1250, 1259)),
    "shift_jis", "cp932", "euc_jp", "iso2022_jp",  # Japanese
    "gb2312", "gbk", "gb18030", "big5", "big5hkscs", "cp950",  # Chinese
    "euc_kr", "cp949",  # Korean
})


def listed_codec(name: str) -> str:
    """The canonical codec name for a declared encoding name, if one of
    :data:`ENCODINGS`.

    Raises:
        PacketError: UNSUPPORTED_ENCODING for a name Python does not know or
            an encoding not in the list.
    """
    codec = lookup_codec(name)
    if codec not in ENCODINGS:
        raise PacketError(Reply.UNSUPPORTED_ENCODING, f'encoding "{clip(name)}" is not supported')
    return codec


@functools.lru_cache(maxsize=64)
def _ascii_compatible(codec: str) -> bool:
    sample = _ASCII_SAMPLE.encode("ascii")
    try:
        # bytes.decode, unlike codecs.decode, refuses bytes-to-bytes codecs such as
        # base64.  The packet is decoded as it arrives: a decoder that holds text
        # back (idna's keeps what follows the last ".") would never let it end.
        return (sample.decode(codec) == _ASCII_SAMPLE
                and decoder_class(codec)().decode(sample) == _ASCII_SAMPLE)
    except (LookupError, ValueError):
        return False


def is_wide(codec: str) -> bool:
    """True for UTF-16 and UTF-32, which only the first bytes can choose."""
    return codec.startswith(("utf-16", "utf-32"))


def narrow_codec(declared: str | None) -> str:
    """The codec for a packet whose first bytes are ASCII-compatible.

    Raises:
        PacketError: UNSUPPORTED_ENCODING for an unknown or non-ASCII-compatible
            encoding, or one not in :data:`ENCODINGS`.
    """
    if declared is None:
        return "utf-8"
    codec = lookup_codec(declared)
    if is_wide(codec):
        return "utf-8"  # the declaration was just read as ASCII, so the label is wrong
    if not _ascii_compatible(codec):
        raise PacketError(
            Reply.UNSUPPORTED_ENCODING,
            f'encoding "{clip(declared)}" is not ASCII-compatible,'
            " but the XML declaration is ASCII",
        )
    return listed_codec(declared)


def read_declaration(text: str) -> tuple[int, str | None] | None:
    """Find the XML declaration at the start of ``text`` (leading space removed).

    Returns the length of the declaration (0 when there is none) and the
    encoding it names, or None while the text is too short to tell.  The
    declaration ends at the first ``>``, so ``<?xml version="1.0">`` works.

    Raises:
        PacketError: MALFORMED_PACKET for a malformed declaration, or one not
            closed within ``MAX_DECLARATION`` characters.
    """
    if len(text) < 6:
        return None if "<?xml".startswith(text[:5]) else (0, None)
    if not text.startswith("<?xml") or text[5] not in SPACE + "?>":
        return 0, None  # no declaration, or another PI such as <?xml-stylesheet ...?>
    # Look only within the limit, so the answer does not depend on how the bytes arrive.
    end = text.find(">", 5, MAX_DECLARATION)
    if end < 0:
        if len(text) >= MAX_DECLARATION:
            raise PacketError(
                Reply.MALFORMED_PACKET, "the XML declaration is not closed (or too long)"
            )
        return None
    body = text[5:end]
    if not PSEUDO_ATTRIBUTES.fullmatch(body):
        raise PacketError(Reply.MALFORMED_PACKET, "the XML declaration is malformed")
    repeated = repeated_pseudo_attribute(body)
    if repeated is not None:
        raise PacketError(Reply.MALFORMED_PACKET, f"the XML declaration has two {repeated} "
                                                  "attributes")
    encoding = ENCODING_ATTRIBUTE.search(body)
    return end + 1, encoding.group(1) if encoding else None


def repeated_pseudo_attribute(body: str) -> str | None:
    """The first pseudo-attribute the declaration's ``body`` (which matches
    :data:`PSEUDO_ATTRIBUTES`) names twice, or None."""
    names = _PSEUDO_NAME.findall(body)
    if len(names) > 1:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                return str(name)
            seen.add(name)
    return None


@functools.lru_cache(maxsize=64)
def decoder_class(codec: str) -> Callable[[], codecs.IncrementalDecoder]:
    """The incremental decoder class for a canonical codec name."""
    return codecs.getincrementaldecoder(codec)
