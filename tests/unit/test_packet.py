"""The command packet parser and builder, without sockets.

Every accepted packet is fed three ways, as h11's tests do: whole, one byte at
a time (the packet must come back with the very byte that closes the root, not
before), and followed by trailing garbage in the same chunk.  Refused packets
are fed whole and one byte at a time, and must fail while being fed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobmonitor.wire.packet
from jobmonitor.errors import PacketError
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet import Packet, PacketParser, build_packet
from jobmonitor.wire.packet_encoding import ENCODINGS
from jobmonitor.wire.packet_shape import PacketWithValueAttributes

PAGEFLEX = "http://www.pageflex.com/schemas"
PAGEFLEX_INC = "http://www.pageflexinc.com/schemas"

# The vendor documentation's example, byte for byte: its declaration lacks the closing "?".
DOC_EXAMPLE = b"""<?xml version="1.0">
<?pf_command version="1.0"?>
<pfjob:job_command xmlns:pfjob="http://www.pageflex.com/schemas" name="SubmitJob">
   <pfjob:job_variables>
      <pfjob:var name="ProjectName">Sample Project.pf</pfjob:var>
      <pfjob:var name="_sys_ClientJobMonitor">true</pfjob:var>
   </pfjob:job_variables>
</pfjob:job_command>"""
DOC_EXAMPLE_VARIABLES = {"ProjectName": "Sample Project.pf", "_sys_ClientJobMonitor": "true"}

# Invalid UTF-8, a NUL, a bare "&", an undefined entity, a stray end tag, a DOCTYPE.
TRAILING_GARBAGE = b"\r\n\xff\xfe\x00 & &bogus; </nope> <!DOCTYPE x> <job_command>"


def packet_text(body: str, *, declaration: str = '<?xml version="1.0"?>\n') -> str:
    root = f'<job_command name="SubmitJob"><job_variables>{body}</job_variables></job_command>'
    return declaration + root


# -- feeding helpers ---------------------------------------------------------------


def feed_whole(data: bytes) -> Packet:
    parser = PacketParser()
    packet = parser.feed(data)
    assert packet is not None
    assert parser.done
    return packet


def feed_bytewise(data: bytes) -> Packet:
    parser = PacketParser()
    for index in range(len(data) - 1):
        assert parser.feed(data[index : index + 1]) is None, (
            f"packet before the root closed, at byte {index}"
        )
    assert not parser.done
    packet = parser.feed(data[-1:])
    assert packet is not None
    assert parser.done
    return packet


def feed_with_trailing_garbage(data: bytes) -> Packet:
    parser = PacketParser()
    packet = parser.feed(data + TRAILING_GARBAGE)
    assert packet is not None
    assert parser.feed(TRAILING_GARBAGE) is None  # later bytes are ignored too
    assert parser.feed_eof() is packet
    assert parser.bytes_received == len(data) + 2 * len(TRAILING_GARBAGE)
    return packet


FEEDERS = [feed_whole, feed_bytewise, feed_with_trailing_garbage]


@pytest.fixture(params=FEEDERS, ids=lambda feeder: feeder.__name__)
def feed(request: pytest.FixtureRequest) -> Callable[[bytes], Packet]:
    feeder: Callable[[bytes], Packet] = request.param
    return feeder


def refuse_whole(data: bytes) -> PacketError:
    with pytest.raises(PacketError) as caught:
        PacketParser().feed(data)
    return caught.value


def refuse_bytewise(data: bytes) -> PacketError:
    parser = PacketParser()
    with pytest.raises(PacketError) as caught:
        for index in range(len(data)):
            parser.feed(data[index : index + 1])
    return caught.value


@pytest.fixture(params=[refuse_whole, refuse_bytewise], ids=lambda feeder: feeder.__name__)
def refuse(request: pytest.FixtureRequest) -> Callable[[bytes], PacketError]:
    feeder: Callable[[bytes], PacketError] = request.param
    return feeder


def failing_byte(data: bytes) -> int:
    """The index of the byte whose feed raised, feeding one byte at a time."""
    parser = PacketParser()
    for index in range(len(data)):
        try:
            parser.feed(data[index : index + 1])
        except PacketError:
            return index
    raise AssertionError("no error while feeding")


def assert_clean(detail: str) -> None:
    """A detail is one short, printable line: no repr, traceback or exception name."""
    assert detail and detail == detail.strip()
    assert detail.isprintable() and len(detail) <= 200
    assert not re.search(r"Traceback|\w+Error\b|\w+Exception\b|\bb'|\\x|\\u", detail), detail


# -- accepted packets ----------------------------------------------------------------


def test_the_documentation_example_with_its_broken_declaration(
    feed: Callable[[bytes], Packet],
) -> None:
    packet = feed(DOC_EXAMPLE)
    assert packet == Packet("SubmitJob", DOC_EXAMPLE_VARIABLES, {})
    assert list(packet.variables) == ["ProjectName", "_sys_ClientJobMonitor"]


@pytest.mark.parametrize("namespace", [PAGEFLEX, PAGEFLEX_INC, None])
@pytest.mark.parametrize("prefixed", [True, False])
def test_elements_match_by_local_name_in_any_namespace(
    feed: Callable[[bytes], Packet], namespace: str | None, prefixed: bool
) -> None:
    prefix = "pf:" if prefixed and namespace else ""
    xmlns = "" if namespace is None else f' xmlns{":pf" if prefixed else ""}="{namespace}"'
    data = (
        f'<{prefix}job_command{xmlns} name="CancelJob"><{prefix}job_variables>'
        f'<{prefix}var name="_sys_TransactionID">42</{prefix}var>'
        f"</{prefix}job_variables></{prefix}job_command>"
    ).encode()
    assert feed(data) == Packet("CancelJob", {"_sys_TransactionID": "42"}, {})


def test_a_prefix_never_declared_is_ignored(feed: Callable[[bytes], Packet]) -> None:
    data = (
        b'<pfjob:job_command name="X"><pfjob:job_variables><pfjob:var name="a">1</pfjob:var>'
        b"</pfjob:job_variables></pfjob:job_command>"
    )
    assert feed(data) == Packet("X", {"a": "1"}, {})


def test_doc_variables(feed: Callable[[bytes], Packet]) -> None:
    data = (
        b'<job_command name="SubmitJob"><job_variables><var name="a">1</var></job_variables>'
        b'<doc_variables><var name="a">doc a</var><var name="b">doc b</var></doc_variables>'
        b"</job_command>"
    )
    packet = feed(data)
    assert packet == Packet("SubmitJob", {"a": "1"}, {"a": "doc a", "b": "doc b"})
    assert list(packet.doc_variables) == ["a", "b"]


def test_without_declaration_pi_or_sections(feed: Callable[[bytes], Packet]) -> None:
    assert feed(b'<job_command name="Ping"/>') == Packet("Ping", {}, {})


def test_variables_keep_document_order_and_are_read_only(feed: Callable[[bytes], Packet]) -> None:
    names = ["zeta", "alpha", "Mid", "_sys_x", "beta"]
    body = "".join(f'<var name="{name}">{index}</var>' for index, name in enumerate(names))
    packet = feed(packet_text(body).encode())
    assert list(packet.variables.items()) == [
        (name, str(index)) for index, name in enumerate(names)
    ]
    with pytest.raises(TypeError):
        packet.variables["zeta"] = "changed"  # type: ignore[index]
    with pytest.raises(AttributeError):
        packet.command = "other"  # type: ignore[misc]


def test_entities_character_references_and_cdata(feed: Callable[[bytes], Packet]) -> None:
    body = (
        '<var name="entities">&amp;&lt;&gt;&quot;&apos;</var>'
        '<var name="references">&#65;&#x42;&#x20AC;&#128512;</var>'
        '<var name="cdata"><![CDATA[<not a="tag"> & ]]>]]&gt;</var>'
        '<var name="comment">be<!-- dropped -->fore<?pi dropped?>after</var>'
    )
    assert feed(packet_text(body).encode()).variables == {
        "entities": "&<>\"'",
        "references": "AB\u20ac\U0001f600",
        "cdata": '<not a="tag"> & ]]>',
        "comment": "beforeafter",
    }


def test_values_keep_whitespace_and_newlines(feed: Callable[[bytes], Packet]) -> None:
    body = (
        '<var name="spaces">  two  spaces  </var><var name="lines">line 1\n\tline 2\n</var>'
        '<var name="blank">   </var><var name="empty"></var><var name="closed"/>'
        '<var name="cr">a\r\nb&#13;</var>'
    )
    assert feed(packet_text(body).encode()).variables == {
        "spaces": "  two  spaces  ",
        "lines": "line 1\n\tline 2\n",
        "blank": "   ",
        "empty": "",
        "closed": "",
        "cr": "a\nb\r",  # XML turns a raw CR LF into LF; only &#13; carries a CR
    }


def test_names_are_kept_exactly(feed: Callable[[bytes], Packet]) -> None:
    data = (
        b'<job_command name=" Spaced "><job_variables><var name=" a">1</var><var name="a">2</var>'
        b"</job_variables></job_command>"
    )
    assert feed(data) == Packet(" Spaced ", {" a": "1", "a": "2"}, {})


VALUE_ATTRIBUTES = (
    b'<pfjob:job_command xmlns:pfjob="http://www.pageflex.com/schemas" name="SubmitJob">'
    b"<pfjob:job_variables>"
    b'<pfjob:var name="ProjectName" value="Sample Project.pf"/>'
    b'<pfjob:var name="JobName" value="from the attribute">from the text</pfjob:var>'
    b'<pfjob:var name="Blank" value="x"> </pfjob:var>'
    b'<pfjob:var name="Empty" value=""/><pfjob:var name="plain">1</pfjob:var>'
    b'</pfjob:job_variables><pfjob:doc_variables><pfjob:var name="d" value="x"/>'
    b"</pfjob:doc_variables></pfjob:job_command>"
)


def test_a_value_attribute_is_not_the_value_but_is_kept_for_a_hint(
    feed: Callable[[bytes], Packet],
) -> None:
    packet = feed(VALUE_ATTRIBUTES)
    # The text is the value, as ever; the value attribute of a blank job
    # variable is kept apart, for the hint.
    assert packet == PacketWithValueAttributes(
        "SubmitJob",
        {"ProjectName": "", "JobName": "from the text", "Blank": " ", "Empty": "", "plain": "1"},
        {"d": ""},
        {"ProjectName": "Sample Project.pf", "Blank": "x", "Empty": ""},
    )
    assert list(packet.value_attributes) == ["ProjectName", "Blank", "Empty"]
    with pytest.raises(TypeError):
        packet.value_attributes["x"] = "y"  # type: ignore[index]
    hint = (" (a variable's value goes in the element's text: "
            '<var name="ProjectName">Sample Project.pf</var>; the value attribute is ignored)')
    assert packet.value_hint("ProjectName") == hint
    assert packet.value_hint("Blank") == hint.replace("ProjectName", "Blank").replace(
        "Sample Project.pf", "x")
    unquoted = hint.replace("Sample Project.pf", "...")
    assert packet.value_hint("ProjectName", quote=False) == unquoted
    # No hint where the value is the text, the attribute is blank or there is none.
    for name in ("JobName", "Empty", "plain", "d", "absent"):
        assert packet.value_hint(name) == "", name
    usual = feed(packet_text('<var name="ProjectName">x</var>').encode())
    assert type(usual) is Packet and usual.value_attributes == {}
    assert usual.value_hint("ProjectName") == ""


@pytest.mark.parametrize(
    "attribute, shown",
    [
        ("A &amp; &lt;B&gt;", "A &amp; &lt;B&gt;"),  # shown as the text it must become
        ("line&#10;break&#9;tab", "line break tab"),
        ("p" * 41, "p" * 37 + "..."),
        ("&amp;" * 10, "&amp;" * 7 + "&a..."),  # escaped, then cut: never past 40
    ],
)
def test_a_quoted_value_attribute_is_one_line_of_at_most_40_characters(
    attribute: str, shown: str
) -> None:
    packet = feed_whole(packet_text(f'<var name="ProjectName" value="{attribute}"/>').encode())
    assert packet.value_hint("ProjectName") == (
        " (a variable's value goes in the element's text: "
        f'<var name="ProjectName">{shown}</var>; the value attribute is ignored)'
    )


def test_blank_lines_comments_and_pis_around_the_declaration(
    feed: Callable[[bytes], Packet],
) -> None:
    data = (
        b'\r\n \t\n<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>\r\n'
        b'<!-- a <!DOCTYPE inside a comment is only text -->\n<?pf_command version="1.0"?>\n'
        b'<job_command name="X"><job_variables><var name="a">1</var></job_variables></job_command>'
    )
    assert feed(data) == Packet("X", {"a": "1"}, {})


def test_non_ascii_utf8(feed: Callable[[bytes], Packet]) -> None:
    body = '<var name="caf\u00e9">\u00e9\u20ac\U0001d11e \u65e5\u672c</var>'
    assert feed(packet_text(body).encode()).variables == {
        "caf\u00e9": "\u00e9\u20ac\U0001d11e \u65e5\u672c"
    }


ENCODED_TEXT = packet_text('<var name="v">caf\u00e9 \u20ac \U0001d11e</var>', declaration="")
ENCODED_VALUE = "caf\u00e9 \u20ac \U0001d11e"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("bom", [True, False], ids=["bom", "no-bom"])
@pytest.mark.parametrize(
    "declaration",
    [
        "",
        '<?xml version="1.0" encoding="UTF-16"?>',
        '<?xml version="1.0" encoding="utf-8"?>',
        "\r\n  ",
    ],
    ids=["none", "utf-16", "wrong-label", "blank-line"],
)
def test_wide_encodings_with_and_without_bom(
    feed: Callable[[bytes], Packet], codec: str, bom: bool, declaration: str
) -> None:
    # The bytes decide: a label that says otherwise cannot override them.
    data = (("\ufeff" if bom else "") + declaration + ENCODED_TEXT).encode(codec)
    assert feed(data) == Packet("SubmitJob", {"v": ENCODED_VALUE}, {})


def test_utf16le_without_bom_as_sent_by_a_popular_client(feed: Callable[[bytes], Packet]) -> None:
    text = '<?xml version="1.0" encoding="utf-16"?>\r\n' + ENCODED_TEXT
    data = text.encode("utf-16-le")
    assert data.startswith(b"<\x00?\x00")
    assert feed(data).variables == {"v": ENCODED_VALUE}


@pytest.mark.parametrize(
    "declaration",
    ["", '<?xml version="1.0" encoding="UTF-8"?>', '<?xml version="1.0" encoding="ISO-8859-1"?>'],
    ids=["none", "utf-8", "wrong-label"],
)
def test_utf8_bom(feed: Callable[[bytes], Packet], declaration: str) -> None:
    # The byte-order mark wins over the label.
    data = b"\xef\xbb\xbf" + (declaration + ENCODED_TEXT).encode()
    assert feed(data).variables == {"v": ENCODED_VALUE}


@pytest.mark.parametrize(
    "label, codec, value",
    [
        ("ISO-8859-1", "latin-1", "caf\u00e9 \u00bd"),
        ("latin-1", "latin-1", "na\u00efve"),
        ("windows-1252", "cp1252", "\u20ac 5 \u2013 \u201cquoted\u201d"),
        ("Shift_JIS", "shift_jis", "\u65e5\u672c\u8a9e"),
    ],
)
def test_declared_encoding(
    feed: Callable[[bytes], Packet], label: str, codec: str, value: str
) -> None:
    data = packet_text(
        f'<var name="v">{value}</var>', declaration=f'<?xml version="1.0" encoding="{label}"?>\n'
    )
    assert feed(data.encode(codec)).variables == {"v": value}


def test_declared_encoding_in_the_broken_declaration(feed: Callable[[bytes], Packet]) -> None:
    data = packet_text(
        '<var name="v">\u00e9t\u00e9</var>',
        declaration="<?xml version='1.0' encoding='latin-1'>\n")
    assert feed(data.encode("latin-1")).variables == {"v": "\u00e9t\u00e9"}


def test_utf16_label_on_utf8_bytes_reads_utf8(feed: Callable[[bytes], Packet]) -> None:
    data = packet_text(
        '<var name="v">\u00e9</var>', declaration='<?xml version="1.0" encoding="UTF-16"?>'
    )
    assert feed(data.encode()).variables == {"v": "\u00e9"}


def test_the_packet_comes_with_the_byte_that_closes_the_root() -> None:
    parser = PacketParser()
    assert parser.feed(DOC_EXAMPLE[:-1]) is None
    assert not parser.done
    packet = parser.feed(DOC_EXAMPLE[-1:] + b"\n<never parsed")
    assert packet is not None and parser.done
    assert parser.feed(b"more") is None
    assert parser.bytes_received == len(DOC_EXAMPLE) + len(b"\n<never parsed") + 4


@pytest.mark.parametrize("codec", ["utf-8", "utf-16-le", "utf-16-be"])
def test_a_bad_byte_after_the_packet_in_the_same_chunk_is_ignored(codec: str) -> None:
    data = ENCODED_TEXT.encode(codec)
    garbage = b"\xff\xdf\xff\xdf\x00\x00"
    assert feed_whole(data + garbage).variables == {"v": ENCODED_VALUE}
    # Also when the chunk starts inside a character the decoder has half of.
    split = data.index("\u20ac".encode(codec)) + 1
    parser = PacketParser()
    assert parser.feed(data[:split]) is None
    assert parser.feed(data[split:] + garbage) == Packet("SubmitJob", {"v": ENCODED_VALUE}, {})


def test_lxml_line_numbers_count_the_declaration_and_blank_lines() -> None:
    data = b'\n\n<?xml version="1.0">\n<job_command name="X">\n<job_variables>\n</job_command>'
    error = refuse_whole(data)
    assert error.code is Reply.MALFORMED_PACKET
    assert error.detail.startswith(
        "not well-formed XML: Opening and ending tag mismatch: job_variables line 5"
    )


# -- refused packets -------------------------------------------------------------------

MALFORMED = [
    (
        "tag mismatch",
        packet_text('<var name="a">1</job_variables>'),
        "not well-formed XML: Opening and ending tag mismatch: var line 2 and job_variables, "
        "line 2",
    ),
    (
        "text before the root",
        'hello <job_command name="X"/>',
        "not well-formed XML: Start tag expected, '<' not found, line 1, column 1",
    ),
    (
        "root element",
        '<jobcommand name="X"/>',
        "the root element is <jobcommand>, not <job_command>",
    ),
    (
        "no command name",
        "<job_command><job_variables/></job_command>",
        "<job_command> has no name attribute",
    ),
    ("empty command name", '<job_command name=""/>', "<job_command> has an empty name attribute"),
    (
        "blank command name",
        '<job_command name=" &#9; "/>',
        "<job_command> has an empty name attribute",
    ),
    (
        "var without a name",
        packet_text("<var>1</var>"),
        "a <var> in <job_variables> has no name attribute",
    ),
    (
        "var with an empty name",
        packet_text('<var name="">1</var>'),
        "a <var> in <job_variables> has an empty name attribute",
    ),
    (
        "duplicate var",
        packet_text('<var name="a">1</var><var name="b"/><var name="a">2</var>'),
        'variable "a" appears twice in <job_variables>',
    ),
    (
        "element in a var",
        packet_text('<var name="a">1<b>2</b></var>'),
        'element <b> inside <var name="a">: values are plain text',
    ),
    (
        "unknown element under the root",
        '<job_command name="X"><job_vars/></job_command>',
        "unexpected element <job_vars> inside <job_command>",
    ),
    (
        "unknown element in a section",
        packet_text('<variable name="a">1</variable>'),
        "unexpected element <variable> inside <job_variables>",
    ),
    (
        "section twice",
        '<job_command name="X"><job_variables/><job_variables/></job_command>',
        "<job_variables> appears twice",
    ),
    (
        "text between vars",
        packet_text('<var name="a"/>oops<var name="b"/>'),
        'unexpected text "oops" inside <job_variables>',
    ),
    (
        "text after the last var",
        packet_text('<var name="a"/>value'),
        'unexpected text "value" inside <job_variables>',
    ),
    (
        "text in the root",
        '<job_command name="X">stray<job_variables/></job_command>',
        'unexpected text "stray" inside <job_command>',
    ),
    (
        "undefined entity",
        packet_text('<var name="a">&nbsp;</var>'),
        "not well-formed XML: Entity 'nbsp' not defined, line 2, column",
    ),
    (
        "undefined entity in an attribute",
        packet_text('<var name="&x;">1</var>'),
        "not well-formed XML: Entity 'x' not defined, line 2, column",
    ),
    ("NUL", packet_text('<var name="a">\x00</var>'), "character U+0000 is not allowed in XML"),
    (
        "control character",
        packet_text('<var name="a">\x1b[31m</var>'),
        "character U+001B is not allowed in XML",
    ),
    ("U+FFFE", packet_text('<var name="a">\ufffe</var>'),
     "character U+FFFE is not allowed in XML"),
    (
        "NUL reference",
        packet_text('<var name="a">&#0;</var>'),
        "not well-formed XML: xmlParseCharRef: invalid xmlChar value 0, line 2, column",
    ),
    (
        "second declaration",
        '<?xml version="1.0"?><?xml version="1.0"?><job_command name="X"/>',
        "not well-formed XML: XML declaration allowed only at the start of the document",
    ),
    (
        "malformed declaration",
        '<?xml version=1.0?><job_command name="X"/>',
        "the XML declaration is malformed",
    ),
    (
        "unclosed declaration",
        '<?xml version="1.0"' + " " * 300,
        "the XML declaration is not closed",
    ),
    (
        "declaration running into the root",
        '<?xml version="1.0" <job_command name="X"/>',
        "the XML declaration is malformed",
    ),
]


@pytest.mark.parametrize(
    "text, detail", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_packets(refuse: Callable[[bytes], PacketError], text: str, detail: str) -> None:
    error = refuse(text.encode())
    assert error.code is Reply.MALFORMED_PACKET
    assert error.detail.startswith(detail)
    assert_clean(error.detail)


def test_a_shape_error_is_raised_at_the_tag_that_shows_it() -> None:
    start = b'<job_command name="X"><job_variables><var name="a">1</var><var name="a">'
    assert failing_byte(start + b"2</var></job_variables></job_command>") == len(start) - 1


def test_peer_text_in_a_detail_is_clipped_to_one_line() -> None:
    name = "line one&#10;line two " + "x" * 100
    error = refuse_whole(packet_text(f'<var name="{name}"/><var name="{name}"/>').encode())
    assert (
        error.detail
        == 'variable "line one line two xxxxxxxxxxxxxxxxxxx..." appears twice in <job_variables>'
    )
    assert_clean(error.detail)


def test_ten_thousand_deep_nesting_fails_fast_at_the_first_extra_level() -> None:
    inside_var = b'<job_command name="X"><job_variables><var name="a">'
    for prefix, detail in [
        (inside_var, 'element <a> inside <var name="a">: values are plain text'),
        (b"", "the root element is <a>, not <job_command>"),
        (b'<job_command name="X">', "unexpected element <a> inside <job_command>"),
    ]:
        data = prefix + b"<a>" * 10_000
        started = time.perf_counter()
        error = refuse_whole(data)
        assert time.perf_counter() - started < 0.5
        assert (error.code, error.detail) == (Reply.MALFORMED_PACKET, detail)
        # At the ">" of the first <a>; at the very start lxml waits for a fifth byte.
        assert failing_byte(data) == len(prefix) + (2 if prefix else 3)


@pytest.mark.parametrize(
    "declaration, detail",
    [
        ('<?xml version="1.0" encoding="klingon"?>', 'unknown encoding "klingon"'),
        ('<?xml version="1.0" encoding="klingon">', 'unknown encoding "klingon"'),
        ('<?xml version="1.0" encoding="utf 8"?>', 'unknown encoding "utf 8"'),
        ('<?xml version="1.0" encoding=""?>', 'unknown encoding ""'),
        (
            '<?xml version="1.0" encoding="cp500"?>',
            'encoding "cp500" is not ASCII-compatible, but the XML declaration is ASCII',
        ),
        (
            '<?xml version="1.0" encoding="base64"?>',
            'encoding "base64" is not ASCII-compatible, but the XML declaration is ASCII',
        ),
        (
            '<?xml version="1.0" encoding="unicode_escape"?>',
            'encoding "unicode_escape" is not ASCII-compatible, but the XML declaration is ASCII',
        ),
        (
            # Its decoder holds back the text after the last ".": the root would never close.
            '<?xml version="1.0" encoding="idna"?>',
            'encoding "idna" is not ASCII-compatible, but the XML declaration is ASCII',
        ),
        # ASCII-compatible, but not in the list of plain text encodings
        ('<?xml version="1.0" encoding="raw_unicode_escape"?>',
         'encoding "raw_unicode_escape" is not supported'),
        ('<?xml version="1.0" encoding="mac_roman"?>', 'encoding "mac_roman" is not supported'),
        ('<?xml version="1.0" encoding="UTF-8-SIG"?>', 'encoding "UTF-8-SIG" is not supported'),
    ],
)
def test_unsupported_declared_encoding(
    refuse: Callable[[bytes], PacketError], declaration: str, detail: str
) -> None:
    error = refuse(packet_text("", declaration=declaration).encode())
    assert (error.code, error.detail) == (Reply.UNSUPPORTED_ENCODING, detail)
    assert_clean(error.detail)


def test_markup_cannot_hide_behind_an_escape_codec(
    refuse: Callable[[bytes], PacketError],
) -> None:
    # raw_unicode_escape would read \u003c as "<": a packet with no markup in its bytes
    data = (b'<?xml version="1.0" encoding="raw_unicode_escape"?>'
            b'\\u003cjob_command name="SubmitJob"/\\u003e')
    error = refuse(data)
    assert (error.code, error.detail) == (
        Reply.UNSUPPORTED_ENCODING, 'encoding "raw_unicode_escape" is not supported')


@pytest.mark.parametrize("codec", sorted(ENCODINGS))
def test_every_listed_encoding_is_read(feed: Callable[[bytes], Packet], codec: str) -> None:
    value = next(char for char in "\u00e9\u0436\u20ac\u65e5\ud55c\u0e01\u00c5" + "x"
                  if _encodes(char, codec))
    data = packet_text(f'<var name="v">{value}</var>',
                       declaration=f'<?xml version="1.0" encoding="{codec}"?>').encode(codec)
    assert feed(data).variables == {"v": value}


def _encodes(char: str, codec: str) -> bool:
    try:
        return char.encode(codec).decode(codec) == char
    except UnicodeError:
        return False


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_an_unlisted_label_on_utf16_bytes(refuse: Callable[[bytes], PacketError],
                                          codec: str) -> None:
    error = refuse(packet_text(
        "", declaration='<?xml version="1.0" encoding="raw_unicode_escape"?>').encode(codec))
    assert (error.code, error.detail) == (
        Reply.UNSUPPORTED_ENCODING, 'encoding "raw_unicode_escape" is not supported')


@pytest.mark.parametrize("declaration, repeated", [
    ('<?xml version="1.0" encoding="utf-8" encoding="raw_unicode_escape"?>', "encoding"),
    ("<?xml version='1.0' encoding='latin-1' encoding='latin-1'>", "encoding"),
    ('<?xml version="1.0" version="1.1"?>', "version"),
    ('<?xml version="1.0" standalone="yes" encoding="utf-8" standalone="no"?>', "standalone"),
])
def test_a_declaration_names_each_attribute_once(
    refuse: Callable[[bytes], PacketError], declaration: str, repeated: str
) -> None:
    data = packet_text('<var name="v">1</var>', declaration=declaration).encode()
    error = refuse(data)
    assert (error.code, error.detail) == (
        Reply.MALFORMED_PACKET, f"the XML declaration has two {repeated} attributes")
    assert jobmonitor.wire.packet._parse_simple(data) is None


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_unknown_label_on_utf16_bytes(refuse: Callable[[bytes], PacketError], codec: str) -> None:
    error = refuse(
        packet_text("", declaration='<?xml version="1.0" encoding="klingon"?>').encode(codec)
    )
    assert (error.code, error.detail) == (Reply.UNSUPPORTED_ENCODING, 'unknown encoding "klingon"')


@pytest.mark.parametrize(
    "data, detail",
    [
        (
            packet_text('<var name="a">\xff</var>').encode("latin-1"),
            "the packet is not valid utf-8 (invalid start byte)",
        ),
        (
            packet_text('<var name="a">\xc3</var>').encode("latin-1"),
            "the packet is not valid utf-8 (invalid continuation byte)",
        ),
        (
            b"\xef\xbb\xbf" + packet_text('<var name="a">\xe9</var>').encode("latin-1"),
            "the packet is not valid utf-8 (invalid continuation byte)",
        ),
        (
            packet_text('<var name="a">\ud800x</var>').encode("utf-16-le", "surrogatepass"),
            "the packet is not valid utf-16-le (illegal UTF-16 surrogate)",
        ),
        (
            packet_text('<var name="a">\udc00</var>').encode("utf-16-be", "surrogatepass"),
            "the packet is not valid utf-16-be (illegal encoding)",
        ),
        (
            packet_text(
                '<var name="a">\x81</var>',
                declaration='<?xml version="1.0" encoding="windows-1252"?>',
            ).encode("latin-1"),
            "the packet is not valid cp1252 (character maps to <undefined>)",
        ),
    ],
    ids=[
        "utf-8 start byte",
        "utf-8 continuation",
        "utf-8 bom",
        "utf-16-le surrogate",
        "utf-16-be surrogate",
        "cp1252",
    ],
)
def test_bytes_invalid_in_the_packets_encoding(
    refuse: Callable[[bytes], PacketError], data: bytes, detail: str
) -> None:
    error = refuse(data)
    assert (error.code, error.detail) == (Reply.UNSUPPORTED_ENCODING, detail)
    assert_clean(error.detail)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE job_command [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<job_command name="SubmitJob"><job_variables><var name="a">&lol9;</var></job_variables></job_command>"""  # noqa: E501 - one packet line

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE job_command [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<job_command name="SubmitJob"><job_variables><var name="a">&secret;</var></job_variables></job_command>"""  # noqa: E501 - one packet line

DOCTYPES = {
    "billion laughs": BILLION_LAUGHS,
    "external entity": EXTERNAL_ENTITY,
    "external DTD": b'<!DOCTYPE job_command SYSTEM "http://127.0.0.1:9/x.dtd"><job_command/>',
    "after comment and PI": (
        b'<?xml version="1.0">\n<!-- hi --><?pf_command version="1.0"?>\n'
        b'<!DOCTYPE x><job_command/>'
    ),
    "lower case": b'<!doctype job_command><job_command name="X"/>',
    "utf-16": '<!DOCTYPE job_command><job_command name="X"/>'.encode("utf-16"),
}


@pytest.mark.parametrize("data", DOCTYPES.values(), ids=DOCTYPES.keys())
def test_doctype_refused(refuse: Callable[[bytes], PacketError], data: bytes) -> None:
    error = refuse(data)
    assert (error.code, error.detail) == (Reply.DOCTYPE_REFUSED, "the packet has a <!DOCTYPE>")


@pytest.mark.parametrize(
    "data", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion laughs", "external entity"]
)
def test_doctype_refused_before_its_contents_arrive(data: bytes) -> None:
    # Refused at the "E" of "<!DOCTYPE", before any entity declaration was read.
    assert failing_byte(data) == data.index(b"<!DOCTYPE") + len(b"<!DOCTYPE") - 1


BOM_DOCTYPE = ('<!DOCTYPE job_command [<!ENTITY e "EXPANDED">]><job_command name="SubmitJob">'
               '<job_variables><var name="ProjectName">&e;</var></job_variables></job_command>')


@pytest.mark.parametrize("data", [
    ("\ufeff\ufeff" + BOM_DOCTYPE).encode(),
    ("\ufeff\ufeff" + BOM_DOCTYPE).encode("utf-16-le"),
    ('<?xml version="1.0"?>\ufeff' + BOM_DOCTYPE).encode(),
    ("\ufeff<!-- a comment -->\ufeff" + BOM_DOCTYPE).encode(),
], ids=["two BOMs", "two BOMs, UTF-16", "BOM after the declaration", "BOM after a comment"])
def test_a_second_byte_order_mark_hides_no_doctype(data: bytes) -> None:
    for parser_feed in (feed_whole, feed_bytewise):
        with pytest.raises(PacketError) as caught:
            parser_feed(data)
        assert (caught.value.code, caught.value.detail) == (
            Reply.MALFORMED_PACKET, "a byte-order mark inside the packet")


def test_too_large_mid_stream() -> None:
    data = packet_text(f'<var name="big">{"x" * 500}</var>').encode()
    parser = PacketParser(max_packet_bytes=100)
    for call in range(10):  # 100 bytes: at the limit, not over it
        assert parser.feed(data[call * 10 : call * 10 + 10]) is None
    with pytest.raises(PacketError) as caught:
        parser.feed(data[100:110])
    assert (caught.value.code, caught.value.detail) == (
        Reply.PACKET_TOO_LARGE,
        "no complete packet within 100 bytes",
    )
    with pytest.raises(PacketError) as again:  # a failed parser stays failed
        parser.feed(b"")
    assert again.value.code is Reply.PACKET_TOO_LARGE
    assert parser.bytes_received == 110


def test_too_large_with_the_default_limit() -> None:
    parser = PacketParser()
    start = b'<job_command name="X"><job_variables><var name="big">'
    assert parser.feed(start) is None
    chunk = b"x" * 65_536
    for _ in range((1_048_576 - len(start)) // len(chunk)):
        assert parser.feed(chunk) is None
    with pytest.raises(PacketError) as caught:
        parser.feed(chunk)
    assert caught.value.code is Reply.PACKET_TOO_LARGE


def test_a_packet_of_exactly_the_limit_is_accepted() -> None:
    data = DOC_EXAMPLE
    assert PacketParser(max_packet_bytes=len(data)).feed(data + b"trailing") is not None
    with pytest.raises(PacketError) as caught:
        PacketParser(max_packet_bytes=len(data) - 1).feed(data)
    assert caught.value.code is Reply.PACKET_TOO_LARGE


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        PacketParser(max_packet_bytes=0)


# -- end of input ------------------------------------------------------------------------


def test_eof_after_the_packet_returns_it() -> None:
    parser = PacketParser()
    packet = parser.feed(DOC_EXAMPLE)
    assert packet is not None
    assert parser.feed_eof() is packet


def test_eof_when_the_root_closed_in_the_final_chunk() -> None:
    parser = PacketParser()
    assert parser.feed(DOC_EXAMPLE[:100]) is None
    assert parser.feed(DOC_EXAMPLE[100:]) is not None
    assert parser.feed_eof() == Packet("SubmitJob", DOC_EXAMPLE_VARIABLES, {})


@pytest.mark.parametrize(
    "data, detail",
    [
        (b"", "empty packet: no data was received"),
        (b"\r\n  ", "incomplete packet: input ended before <job_command>"),
        (b"<", "incomplete packet: input ended before <job_command>"),
        (b'<?xml version="1.0"', "incomplete packet: input ended before <job_command>"),
        (
            b'<?xml version="1.0"?><!-- open comment',
            "incomplete packet: input ended before <job_command>",
        ),
        (b'<job_command name="X"', "incomplete packet: input ended before <job_command>"),
        (b'<job_command name="X">', "incomplete packet: input ended inside <job_command>"),
        (DOC_EXAMPLE[:200], "incomplete packet: input ended inside <var>"),
        (DOC_EXAMPLE[:-1], "incomplete packet: input ended inside <job_command>"),
        (
            b'<job_command name="X"/'.decode().encode("utf-16-le")[:-1],
            "incomplete packet: input ended before <job_command>",
        ),
    ],
)
def test_eof_before_the_packet_is_complete(data: bytes, detail: str) -> None:
    parser = PacketParser()
    assert parser.feed(data) is None
    with pytest.raises(PacketError) as caught:
        parser.feed_eof()
    assert (caught.value.code, caught.value.detail) == (Reply.MALFORMED_PACKET, detail)
    assert_clean(caught.value.detail)
    with pytest.raises(PacketError) as again:
        parser.feed(b"</job_command>")
    assert again.value.detail == detail


def test_eof_after_an_error_raises_that_error() -> None:
    parser = PacketParser()
    with pytest.raises(PacketError):
        parser.feed(b"<!DOCTYPE x>")
    with pytest.raises(PacketError) as caught:
        parser.feed_eof()
    assert caught.value.code is Reply.DOCTYPE_REFUSED


# -- building packets -------------------------------------------------------------------

XML_CHARACTERS = st.characters(
    exclude_categories=["Cs"], exclude_characters="\ufffe\uffff", min_codepoint=0x20
) | st.sampled_from("\t\n\r")
NAMES = st.text(XML_CHARACTERS, min_size=1, max_size=20).filter(
    lambda name: name.strip(" \t\r\n") != ""
)
VALUES = st.text(XML_CHARACTERS, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    command=NAMES,
    variables=st.dictionaries(NAMES, VALUES, max_size=8),
    doc_variables=st.dictionaries(NAMES, VALUES, max_size=3),
    namespace=st.sampled_from([PAGEFLEX, PAGEFLEX_INC, None]),
)
def test_build_packet_round_trips(
    command: str, variables: dict[str, str], doc_variables: dict[str, str], namespace: str | None
) -> None:
    data = build_packet(command, variables, doc_variables, namespace=namespace)
    for feeder in (feed_whole, feed_with_trailing_garbage):
        packet = feeder(data)
        assert packet == Packet(command, variables, doc_variables)
        assert list(packet.variables.items()) == list(variables.items())


def test_build_packet_bytes() -> None:
    data = build_packet("SubmitJob", {"a": 'x < y & "z"'}, namespace=None)
    assert data == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<?pf_command version="1.0"?>\n'
        b'<job_command name="SubmitJob"><job_variables><var name="a">x &lt; y &amp; "z"</var>'
        b"</job_variables></job_command>\n"
    )
    assert build_packet("X").startswith(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<?pf_command version="1.0"?>\n'
    )
    assert b'xmlns:pfjob="http://www.pageflex.com/schemas"' in build_packet("X")
    assert feed_bytewise(build_packet("X", {"a": "1"})[:-1]) == Packet("X", {"a": "1"}, {})


ILLEGAL = st.sampled_from(
    [chr(code) for code in range(0x20) if chr(code) not in "\t\n\r"]
    + ["\ud800", "\udfff", "\ufffe", "\uffff"]
)


@given(before=VALUES, illegal=ILLEGAL, after=VALUES)
def test_build_packet_refuses_what_xml_cannot_carry(before: str, illegal: str, after: str) -> None:
    text = before + illegal + after
    cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("X", {"a": text}, {}),
        ("X", {text: "1"}, {}),
        ("X", {}, {"a": text}),
        (text, {}, {}),
    ]
    for command, variables, doc_variables in cases:
        with pytest.raises(
            ValueError, match=f"contains U\\+{ord(illegal):04X}, which XML cannot carry"
        ):
            build_packet(command, variables, doc_variables)


@pytest.mark.parametrize("blank", ["", " ", "\t\r\n"])
def test_build_packet_refuses_blank_names(blank: str) -> None:
    with pytest.raises(ValueError, match="the command must not be empty"):
        build_packet(blank)
    with pytest.raises(ValueError, match="must not be empty"):
        build_packet("X", {blank: "1"})


def test_public_names() -> None:
    assert sorted(jobmonitor.wire.packet.__all__) == ["Packet", "PacketParser", "build_packet",
                                                      "packet_end_hint", "read_whole"]
