"""Command packets: bytes <-> :class:`Packet`.

Sans-I/O.  A :class:`PacketParser` is fed bytes as they arrive and hands back
the :class:`Packet` the moment the root ``job_command`` element closes, because
a telnet or netcat client never closes its side.

Most packets arrive whole in the first chunk and use little of XML.  Such a
chunk is first tried on a fast path (:mod:`jobmonitor.wire.packet_fast`): regular
expressions that read a strict subset of packets to exactly the Packet the
stages below would, several times faster.  For anything outside that subset,
including every malformed packet, it gives up without a trace and the chunk
goes through the four stages like any other:

1. *sniff*: a byte-order mark, or the zero bytes around the first ``<`` or
   whitespace, pick UTF-16 or UTF-32; anything else is ASCII-compatible.
2. *declaration*: the XML declaration is read and removed here, not by lxml,
   so that the vendor's broken ``<?xml version="1.0">`` (no ``?``) and blank
   lines before it are accepted; in an ASCII-compatible packet it names the
   encoding to decode the rest with.  (These two stages' helpers are in
   :mod:`jobmonitor.wire.packet_encoding`.)
3. *prolog*: decoded text is scanned up to the root element's start tag so
   that a ``<!DOCTYPE`` is refused before lxml could read any DTD.
4. *body*: text goes, re-encoded as UTF-8, to an lxml pull parser; its start
   and end events are checked against the packet's shape as they come, so a
   bad or deeply nested element fails at once (the rules are
   :mod:`jobmonitor.wire.packet_shape`'s).

Our own incremental decoder catches bytes invalid in the packet's encoding
and characters XML forbids.  Nothing is buffered beyond ``max_packet_bytes``.

Where a packet ends matters on a kept connection (``_sys_KeepOpen``), whose
next packet starts with the byte after this one's root end tag: the parser
keeps those bytes (:attr:`PacketParser.rest`).  The fast path knows the end
from its match.  The full parser never lets lxml read past the root: it feeds
text in pieces that end where the root may close (the end tag of a
``job_command``; before the root has started, any ``>``) and stops at the
piece that closes it; what follows is encoded back into bytes.
:func:`packet_end_hint` tells a kept connection how much of its input to hand
the parser at a time, so that a burst of pipelined packets costs time in
proportion to its size.
:func:`build_packet` (from :mod:`jobmonitor.wire.packet_build`) goes the other
way, for clients and tests.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import cast

from lxml import etree

from ..errors import PacketError
from .codes import Reply
from .lines import clip
from .packet_build import build_packet
from .packet_encoding import (
    ILLEGAL_CHAR,
    SPACE,
    decoder_class,
    is_wide,
    listed_codec,
    narrow_codec,
    read_declaration,
    sniff,
)
from .packet_fast import MAX_BYTES, SMALL_BYTES, read_simple
from .packet_shape import Packet, PacketShape
from .packet_shape import malformed as _fail

__all__ = ["Packet", "PacketParser", "build_packet", "packet_end_hint", "read_whole"]

_SKIP_SPACE = re.compile(r"[ \t\r\n]*")
#: An end tag that may close the root (any namespace prefix).
_ROOT_END = re.compile(r"</(?:[^ \t\r\n<>/:]+:)?job_command[ \t\r\n]*>")
_SPACE_BYTES = SPACE.encode()
_ROOT_NAME = b"job_command"
#: What our pull parser's read_events() yields: it asks for start and end events
#: only, each with its element (lxml-stubs types it for every kind of event).
_Events = Iterator[tuple[str, etree._Element]]

def packet_end_hint(data: bytes, start: int = 0) -> int:
    """Where the packet that starts at ``start`` in ``data`` most likely ends: just
    past the ``>`` after the second ``job_command`` from there (the root's end
    tag), and at most ``MAX_BYTES`` on.  A hint: a parser fed ``data`` up to there,
    then the rest, reads what it would read from ``data`` fed whole."""
    limit = min(len(data), start + MAX_BYTES)
    if limit - start <= SMALL_BYTES:
        return limit
    first = data.find(_ROOT_NAME, start, limit)
    if first >= 0:
        second = data.find(_ROOT_NAME, first + len(_ROOT_NAME), limit)
        if second >= 0:
            close = data.find(b">", second + len(_ROOT_NAME), limit)
            if close >= 0:
                return close + 1
    return limit


def read_whole(data: bytes, max_packet_bytes: int,
               max_packet_variables: int) -> tuple[Packet, bytes, bool] | None:
    """The fast path alone, with no parser: ``(packet, rest, alone)`` if ``data``
    starts with a whole packet it reads within the limits, else None (give the
    bytes to a ``PacketParser``, which words any refusal).  ``rest``: the bytes
    after the packet; ``alone``: nothing but whitespace after it.  Never raises.

    What ``PacketParser.read_fast`` does, for a caller that makes a parser only
    when this cannot read the packet (a kept connection's next packets).
    """
    if len(data) > max_packet_bytes:
        return None
    found = read_simple(data)
    if found is None:
        return None
    command, variables, doc_variables, end = found
    if len(variables) + len(doc_variables) > max_packet_variables:
        return None  # the full parser words the refusal
    if end < len(data):
        rest = data[end:]
        return Packet(command, variables, doc_variables), rest, not rest.strip(_SPACE_BYTES)
    return Packet(command, variables, doc_variables), b"", True


def _parse_simple(data: bytes) -> Packet | None:
    """The packet, if ``data`` is a whole one the fast path reads; never raises."""
    found = read_simple(data)
    return None if found is None else Packet(*found[:3])


def _describe(exc: etree.XMLSyntaxError) -> str:
    """lxml's message on one clean line (it may hold newlines)."""
    message = " ".join(str(exc.msg or "syntax error").split()).replace(" ,", ",")
    return clip(f"not well-formed XML: {message}", 200)


def _new_xml_parser() -> etree.XMLPullParser:
    # resolve_entities="internal", not False: with False, lxml's pull parser
    # stops at an undefined entity without an error or any further event, so
    # the packet would just hang.  No entity can be defined anyway: a DOCTYPE
    # never reaches lxml, and no DTD or network resource is ever loaded.
    return etree.XMLPullParser(
        events=("start", "end"),
        encoding="utf-8",
        # lxml takes "internal"; lxml-stubs types the argument as a bool only.
        resolve_entities="internal",  # type: ignore[arg-type]
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


class PacketParser:
    """Reads one command packet from the bytes of one connection.

    :meth:`feed` returns None until the root element closes, then the
    :class:`Packet`; the bytes after it in that call are :attr:`rest`, and
    later calls are ignored.  Once a call has raised :class:`PacketError`,
    every later call raises the same error again.  A caller that gives up on a
    packet before either calls :meth:`close`.
    """

    _try_fast_path = True  # tests turn it off to compare with the full parser

    # The state a new parser starts in: class-level defaults (all immutable), which
    # an instance shadows as it changes them.  A connection makes a parser for each
    # packet, and most packets never change most of these.
    _bytes_received = 0
    _packet: Packet | None = None
    _failure: PacketError | None = None
    _alone = False
    _rest = b""
    _fast_tried = False
    _closed = False
    _shape: PacketShape | None = None  # made by _begin
    _xml: etree.XMLPullParser | None = None  # made when the body stage starts
    # The incremental parser's stages, as bound methods: set up by _begin only
    # when the fast path cannot read the packet, and dropped once it is read,
    # refused or closed (they refer back to the parser: a cycle only the GC could free).
    _on_bytes: Callable[[bytes], Packet | None] | None = None
    _on_text: Callable[[str], Packet | None] | None = None

    def __init__(self, *, max_packet_bytes: int = 1_048_576,
                 max_packet_variables: int = 10_000) -> None:
        if max_packet_bytes < 1:
            raise ValueError("max_packet_bytes must be at least 1")
        if max_packet_variables < 0:
            raise ValueError("max_packet_variables must not be negative")
        self._max_packet_bytes = max_packet_bytes
        self._max_packet_variables = max_packet_variables

    def _begin(self) -> Callable[[bytes], Packet | None]:
        """Set up the incremental parser's state; return its first stage."""
        self._on_bytes = self._sniff
        self._on_text = self._declaration
        self._sniffed = b""  # the first bytes, until they prove an encoding
        self._codec = ""  # "" until a BOM, the sniff or the declaration decides
        self._decoder: codecs.IncrementalDecoder | None = None
        self._held = ""  # text a stage cannot judge yet
        self._newlines = 0  # in the leading space and declaration that lxml never sees
        self._markup_end = ""  # in the prolog: the end of the comment or PI we are in
        self._tag_open = False  # the text lxml has is inside a tag, as far as we can tell
        self._rest_text = ""  # the text after the root's end tag, once it closed
        self._shape = PacketShape(self._max_packet_variables)
        return self._on_bytes

    @property
    def bytes_received(self) -> int:
        """Every byte passed to :meth:`feed`, including any ignored after the packet."""
        return self._bytes_received

    @property
    def alone(self) -> bool:
        """True when the client sent its packet and nothing after it but whitespace,
        as far as is known: only a packet the fast path read can tell."""
        return self._alone

    @property
    def rest(self) -> bytes:
        """The bytes after the packet in the call to :meth:`feed` that completed
        it: on a kept connection, the start of the next packet."""
        return self._rest

    @property
    def done(self) -> bool:
        """True once the packet is complete."""
        return self._packet is not None

    def read_fast(self, data: bytes) -> Packet | None:
        """Try the fast path alone on ``data``, the first bytes: the packet if they
        are a whole one it reads, else None, with nothing consumed: give the same
        bytes to :meth:`feed`, which then goes straight to the full parser.  For a
        caller that feeds the full parser a slice at a time."""
        tried, self._fast_tried = self._fast_tried, True
        if tried or self._bytes_received or not self._try_fast_path:
            return None
        found = read_whole(data, self._max_packet_bytes, self._max_packet_variables)
        if found is None:
            return None
        self._packet, self._rest, self._alone = found
        self._bytes_received = len(data)
        return self._packet

    def skip_fast_path(self) -> None:
        """The caller has tried ``read_whole`` on the first bytes: :meth:`feed`
        goes straight to the full parser."""
        self._fast_tried = True

    def feed(self, data: bytes) -> Packet | None:
        """Parse the next bytes; return the packet once its root element closes.

        Raises:
            PacketError: the packet is malformed, too large, in an unsupported
                encoding or has a DOCTYPE; raised as soon as that is known.
            ValueError: the parser was closed before its packet was read.
        """
        if self._failure is not None:
            raise PacketError(self._failure.code, self._failure.detail)
        if self._packet is not None:
            self._bytes_received += len(data)
            self._alone = False
            return None
        if self._closed:
            raise ValueError("feed() on a closed PacketParser")
        if not self._fast_tried:
            # The usual packet arrives whole, in one chunk, and is simple enough
            # for the fast path; anything else is read from the start below.
            packet = self.read_fast(data)
            if packet is not None:
                return packet
        room = self._max_packet_bytes - self._bytes_received
        self._bytes_received += len(data)
        on_bytes = self._on_bytes
        if on_bytes is None:
            on_bytes = self._begin()
        try:
            # Bytes past the limit are never parsed: the packet must close within it.
            packet = on_bytes(data if len(data) <= room else data[:room])
            if packet is None and self._bytes_received > self._max_packet_bytes:
                raise PacketError(
                    Reply.PACKET_TOO_LARGE,
                    f"no complete packet within {self._max_packet_bytes} bytes",
                )
        except PacketError as exc:
            # A copy: the error itself holds its traceback, whose frames hold lxml's
            # parser and elements (and this parser, in a cycle) for as long as it lives.
            self._failure = PacketError(exc.code, exc.detail)
            self._release()
            raise
        if packet is not None:
            if len(data) > room:  # never parsed, but it follows the packet all the same
                self._rest += data[room:]
            self._packet = packet
            self._release()
        return packet

    def close(self) -> None:
        """Free the full parser's resources now: the caller is done with this
        parser, whatever state it is in (a lost connection, a timeout).

        A packet read or refused frees them by itself.  They are lxml's parser and
        the part of the document it has built, which refer to each other: left to
        the garbage collector, that C memory would wait for its next pass over
        young objects, which a server tuned for many live objects (``jobmonitor
        serve``) makes rare.  After ``close``, :meth:`feed` raises ValueError
        unless the packet was already read or refused.
        """
        self._closed = True
        self._release()

    def _release(self) -> None:
        self._on_bytes = self._on_text = None
        xml, self._xml = self._xml, None
        if xml is not None:
            _close_xml_parser(xml)
        if self._shape is not None:
            self._shape.release()

    def feed_eof(self) -> Packet:
        """The client has closed its side: return the packet if it is complete.

        Raises:
            PacketError: MALFORMED_PACKET for an empty or incomplete packet, or
                the error an earlier call raised.
        """
        if self._packet is not None:
            return self._packet
        if self._failure is None:
            if self._bytes_received == 0:
                self._failure = _fail("empty packet: no data was received")
            elif self._shape is not None and self._shape.open_elements:
                inside = self._shape.open_elements[-1]
                self._failure = _fail(f"incomplete packet: input ended inside <{inside}>")
            else:
                self._failure = _fail("incomplete packet: input ended before <job_command>")
            self._release()
        raise PacketError(self._failure.code, self._failure.detail)

    # -- bytes to text -------------------------------------------------------

    def _sniff(self, data: bytes) -> Packet | None:
        head = self._sniffed + data
        found = sniff(head)
        if found is None:
            self._sniffed = head
            return None
        self._codec, bom_length = found
        self._sniffed = b""
        if is_wide(self._codec):
            self._decoder = decoder_class(self._codec)()
            self._on_bytes = self._decode
        else:
            # Until the declaration names the encoding, read bytes as Latin-1:
            # one character per byte, so its length is a byte offset.
            self._on_bytes = self._narrow_declaration
        return self._on_bytes(head[bom_length:])

    def _narrow_declaration(self, data: bytes) -> Packet | None:
        return self._declaration(data.decode("latin-1"))

    def _decode(self, data: bytes) -> Packet | None:
        assert self._decoder is not None
        assert self._on_text is not None  # both set while bytes are decoded
        problem: PacketError | None = None
        undecoded = b""  # the bytes from an invalid one on
        try:
            text = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            text = self._valid_prefix(exc)
            undecoded = exc.object[exc.start:]
            detail = f"the packet is not valid {self._codec} ({exc.reason})"
            problem = PacketError(Reply.UNSUPPORTED_ENCODING, detail)
        cut = ""  # the text from a forbidden character on
        illegal = ILLEGAL_CHAR.search(text)
        if illegal is not None:
            text, cut = text[: illegal.start()], text[illegal.start():]
            problem = _fail(f"character U+{ord(illegal.group()):04X} is not allowed in XML")
        # What came before a bad byte is parsed first: it may complete the
        # packet, and then the bad byte was trailing garbage.
        packet = self._on_text(text) if text else None
        if packet is None:
            if problem is not None:
                raise problem
            return None
        # What follows the packet, as the client sent it (our decoding undone).
        after = (self._rest_text + cut).encode(self._codec, "replace") + undecoded
        if not undecoded:
            held = self._decoder.getstate()[0]  # a character's first bytes, if any
            after += held if isinstance(held, bytes) else b""
        self._rest = after
        return packet

    def _valid_prefix(self, exc: UnicodeDecodeError) -> str:
        try:
            return exc.object[: exc.start].decode(self._codec)
        except UnicodeDecodeError:
            return ""

    # -- text stages: declaration, prolog, body --------------------------------

    def _declaration(self, text: str) -> Packet | None:
        held = self._held + text
        text = held.lstrip(SPACE)
        self._newlines += held.count("\n", 0, len(held) - len(text))
        found = read_declaration(text)
        if found is None:
            self._held = text
            return None
        length, declared = found
        self._newlines += text.count("\n", 0, length)
        # lxml gets a newline for each one removed, to keep its line numbers
        # right, and never a second declaration where it would pass for the first.
        self._held = "\n" * self._newlines or (" " if length else "")
        self._on_text = self._prolog
        if self._decoder is not None:
            if declared is not None:
                listed_codec(declared)  # a listed label cannot override the sniffed UTF-16/32
            return self._prolog(text[length:])
        if declared is not None and self._codec:
            listed_codec(declared)  # the UTF-8 byte-order mark wins over a listed label
        self._codec = self._codec or narrow_codec(declared)
        self._decoder = decoder_class(self._codec)()
        self._on_bytes = self._decode
        return self._decode(text[length:].encode("latin-1"))

    def _prolog(self, text: str) -> Packet | None:
        """Pass comments and PIs before the root element; refuse a DOCTYPE."""
        text = self._held + text
        position = 0
        while True:
            if self._markup_end:
                end = text.find(self._markup_end, position)
                if end < 0:  # hold what may be the start of a split end marker
                    return self._hold(text, max(position, len(text) - len(self._markup_end) + 1))
                position = end + len(self._markup_end)
                self._markup_end = ""
            # The pattern matches the empty string too: never None.
            position = _SKIP_SPACE.match(text, position).end()  # type: ignore[union-attr]
            if text.startswith("\ufeff", position):
                # Only the packet's first bytes may be a byte-order mark, and those
                # are gone by now.  libxml2 would skip this one too, and read what
                # follows as the start of the document, a DOCTYPE included.
                raise PacketError(Reply.MALFORMED_PACKET, "a byte-order mark inside the packet")
            ahead = text[position : position + 9]
            if ahead.startswith("<!--"):
                self._markup_end, position = "-->", position + 4
            elif ahead.startswith("<?"):
                self._markup_end, position = "?>", position + 2
            elif ahead.upper().startswith("<!DOCTYPE"):
                raise PacketError(Reply.DOCTYPE_REFUSED, "the packet has a <!DOCTYPE>")
            elif len(ahead) < 9 and _may_become_markup(ahead):
                return self._hold(text, position)
            else:  # the root element's start tag, or something lxml will reject
                self._held = ""
                self._on_text = self._feed_xml
                return self._feed_xml(text)

    def _hold(self, text: str, keep_from: int) -> Packet | None:
        self._held = text[keep_from:]
        return self._feed_xml(text[:keep_from]) if keep_from else None

    def _feed_xml(self, text: str) -> Packet | None:
        """Feed lxml ``text`` up to the end of the packet, never past it."""
        if ">" not in text:  # (the root cannot close in it)
            return self._feed_piece(text)
        start = 0
        while start < len(text):
            end = self._next_cut(text, start)
            packet = self._feed_piece(text[start:end])
            if packet is not None:
                self._rest_text = text[end:]
                return packet
            start = end
        return None

    def _next_cut(self, text: str, start: int) -> int:
        """Where the next piece of ``text`` for lxml ends: where the root may close."""
        assert self._shape is not None  # made by _begin, with the other stages
        if self._tag_open or not self._shape.open_elements:
            # Before the root opens, any ">" may close it (``<job_command .../>``);
            # after a piece that ended inside a tag, the first ">" ends that tag.
            close = text.find(">", start)
            return len(text) if close < 0 else close + 1
        found = _ROOT_END.search(text, start)
        return len(text) if found is None else found.end()

    def _feed_piece(self, text: str) -> Packet | None:
        xml = self._xml
        if xml is None:
            # Made on first use, not per connection: a packet the fast path
            # reads needs none, and building one costs a third as much as that read.
            xml = self._xml = _new_xml_parser()
        shape = self._shape
        assert shape is not None  # made by _begin, with the other stages
        opened, closed = text.rfind("<"), text.rfind(">")
        if opened != closed:  # (equal only when both are -1: as it was)
            self._tag_open = opened > closed
        try:
            xml.feed(text.encode("utf-8"))
        except etree.XMLSyntaxError as exc:
            # Events before the error come first: a shape error there is the
            # earlier problem, and the root may have closed before junk after it.
            packet = shape.read(cast(_Events, xml.read_events()))
            if packet is not None:
                return packet
            raise _fail(_describe(exc)) from exc
        return shape.read(cast(_Events, xml.read_events()))

def _close_xml_parser(xml: etree.XMLPullParser) -> None:
    """Close lxml's parser and take its last events: that is what frees it and its
    document by reference counting.  Until then the parser, its events and the
    document's elements (which name their parser) hold each other in a cycle."""
    # (close() also ends the elements still open, as events; an unfinished or
    # refused document raises, and nothing is wanted from it)
    with contextlib.suppress(etree.LxmlError):
        xml.close()
    for _ in cast(_Events, xml.read_events()):
        pass


def _may_become_markup(ahead: str) -> bool:
    """True if more text could make ``ahead`` a comment, PI or DOCTYPE."""
    return (
        "<!--".startswith(ahead) or "<?".startswith(ahead) or "<!DOCTYPE".startswith(ahead.upper())
    )
