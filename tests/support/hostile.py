"""Hypothesis strategies for hostile command packets.

Every packet drawn from ``hostile_packets`` must be refused: none is a valid
command that could start a job, because the only well-formed packets built
here name a command the server does not have.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from jobmonitor.wire.packet import build_packet

#: Small enough that oversized packets stay quick to send, big enough for real ones.
MAX_PACKET_BYTES = 16 * 1024
#: Put in a file that external entities and XIncludes point at; must never come back.
SECRET = "top-secret-4c1f0e"

XML_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs",),
    exclude_characters="\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13"
                       "\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff")
NAMES = st.text(XML_CHARS, min_size=1, max_size=20).filter(lambda s: s.strip(" \t\r\n"))
VALUES = st.text(XML_CHARS, max_size=40)


@st.composite
def unknown_commands(draw: st.DrawFn) -> bytes:
    """A well-formed packet whose command does not exist (names may hold line breaks,
    controls as character references, or be long)."""
    command = "NoSuch" + draw(st.one_of(
        VALUES,
        st.sampled_from(["\n", "\r\nR0000000: T0000001", "\x85", "\u2028", "\t"]),
        st.integers(1, 4000).map(lambda n: "x" * n)))
    variables = draw(st.dictionaries(NAMES, VALUES, max_size=4))
    namespace = draw(st.sampled_from([None, "http://www.pageflex.com/schemas"]))
    return build_packet(command, variables, namespace=namespace)


@st.composite
def doctype_packets(draw: st.DrawFn, secret_path: str) -> bytes:
    """Entity bombs, external entities and external DTDs, after a valid prolog."""
    lol = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    body = draw(st.sampled_from([
        f'<!DOCTYPE job_command [<!ENTITY l0 "lol">{lol}]>'
        '<job_command name="SubmitJob"><job_variables><var name="ProjectName">&l9;</var>'
        "</job_variables></job_command>",
        '<!DOCTYPE job_command [<!ENTITY a "' + "A" * 5000 + '">]>'
        '<job_command name="X"><job_variables><var name="a">' + "&a;" * 500 + "</var>"
        "</job_variables></job_command>",
        '<!DOCTYPE job_command [<!ENTITY xxe SYSTEM "file://FILE">]>'
        '<job_command name="SubmitJob"><job_variables><var name="ProjectName">&xxe;</var>'
        "</job_variables></job_command>",
        '<!DOCTYPE job_command SYSTEM "file://FILE"><job_command name="X"/>',
        '<!DOCTYPE job_command [<!ENTITY % p SYSTEM "file://FILE"> %p;]><job_command name="X"/>',
        "<!doctype job_command><job_command name='X'/>",
        "<!DOCTYPE",
    ]))
    prolog = draw(st.sampled_from([
        "", '<?xml version="1.0"?>', '<?xml version="1.0">\n', "<!-- hi -->\n",
        '<?pf_command version="1.0"?>\n', "\n\n  "]))
    text = prolog + body.replace("FILE", secret_path)
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "utf-16-le"]))
    return text.encode(encoding)


@st.composite
def entity_references(draw: st.DrawFn, secret_path: str) -> bytes:
    """References to entities nobody declared, and XIncludes."""
    value = draw(st.sampled_from([
        "&xxe;", "&lol9;", "&#0;", "&#xD800;", "&#99999999;", "&amp",
        f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{secret_path}"/>',
        f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://{secret_path}" '
        'parse="text"/>',
    ]))
    where = draw(st.sampled_from(["value", "attribute", "section"]))
    if where == "value":
        body = f'<job_variables><var name="ProjectName">{value}</var></job_variables>'
    elif where == "attribute" and value.startswith("&"):
        body = f'<job_variables><var name="{value}">x</var></job_variables>'
    else:
        body = f"<job_variables>{value}</job_variables>"
    return f'<job_command name="SubmitJob">{body}</job_command>'.encode()


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([4, 50, 1000, 10_000]))
    opened = "<a>" * depth
    closed = "</a>" * depth if draw(st.booleans()) else ""
    where = draw(st.sampled_from(["var", "section", "root"]))
    if where == "root":
        return (opened + closed).encode()
    if where == "section":
        return f'<job_command name="SubmitJob">{opened}{closed}</job_command>'.encode()
    return (f'<job_command name="SubmitJob"><job_variables><var name="ProjectName">{opened}'
            f"{closed}</var></job_variables></job_command>").encode()


_BAD_UTF8 = [b"\xff", b"\xfe\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80",
             b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80"]


@st.composite
def mis_encoded(draw: st.DrawFn) -> bytes:
    """Bytes that are not valid in the packet's encoding, or an encoding we refuse."""
    kind = draw(st.sampled_from(["utf-8", "utf-16", "declared"]))
    if kind == "utf-8":
        bad = draw(st.sampled_from(_BAD_UTF8))
        return (b'<job_command name="SubmitJob"><job_variables><var name="ProjectName">ab'
                + bad + b"</var></job_variables></job_command>")
    if kind == "utf-16":
        head = '<job_command name="SubmitJob"><job_variables><var name="P">'.encode("utf-16-le")
        tail = "</var></job_variables></job_command>".encode("utf-16-le")
        bad = draw(st.sampled_from([b"\x00\xd8A\x00", b"\x00\xdc", b"\x00\xd8\x00\xd8", b"A"]))
        bom = draw(st.sampled_from([b"", b"\xff\xfe"]))
        return bom + head + bad + (tail if bad != b"A" else b"")
    encoding, sample = draw(st.sampled_from([
        ("x-no-such", "caf\u00e9"), ("cp500", "abc"), ("base64", "abc"), ("rot13", "abc"),
        ("utf-8", "caf\u00e9".encode("latin-1").decode("latin-1")), ("ascii", "\u00e9"),
        ("utf-7", "abc"), ("a" * 300, "x"), ("raw_unicode_escape", "\\u003cx/\\u003e"),
        ("mac_roman", "abc")]))
    text = (f'<?xml version="1.0" encoding="{encoding}"?><job_command name="SubmitJob">'
            f'<job_variables><var name="ProjectName">{sample}</var></job_variables>'
            "</job_command>")
    return text.encode("latin-1")


@st.composite
def huge_attributes(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(MAX_PACKET_BYTES // 2, MAX_PACKET_BYTES * 3))
    where = draw(st.sampled_from(["command", "var", "unclosed"]))
    if where == "command":
        return f'<job_command name="{"C" * size}"/>'.encode()
    if where == "var":
        return (f'<job_command name="SubmitJob"><job_variables><var name="{"v" * size}">x</var>'
                "</job_variables></job_command>").encode()
    return f'<job_command name="{"C" * size}'.encode()


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    """A complete SubmitJob for a real project, cut before its root element closes."""
    packet = build_packet("SubmitJob", {"ProjectName": "echo", "_sys_ClientJobMonitor": "true"},
                          namespace=draw(st.sampled_from([None, "urn:x"])))
    text = packet.decode()
    cut = draw(st.integers(1, text.rindex(">")))  # the root element never closes
    return text[:cut].encode(draw(st.sampled_from(["utf-8", "utf-16", "utf-32"])))


@st.composite
def with_nul_bytes(draw: st.DrawFn) -> bytes:
    packet = build_packet("NoSuchCommand", draw(st.dictionaries(NAMES, VALUES, max_size=3)))
    end = packet.rindex(b"</")
    spot = draw(st.integers(0, end))
    return packet[:spot] + b"\x00" * draw(st.integers(1, 3)) + packet[spot:]


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    head = b'<job_command name="SubmitJob"><job_variables><var name="ProjectName">'
    filler = draw(st.sampled_from([b"a", b" ", b"<!-- -->", b"&amp;"]))
    return head + filler * (MAX_PACKET_BYTES // len(filler) + draw(st.integers(1, 4096)))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """An unknown-command packet with random bytes flipped, dropped, inserted or repeated."""
    data = bytearray(draw(unknown_commands()))
    for _ in range(draw(st.integers(1, 8))):
        spot = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "drop", "insert", "repeat"]))
        if action == "flip":
            data[spot] ^= 1 << draw(st.integers(0, 7))
        elif action == "drop" and len(data) > 1:
            del data[spot]
        elif action == "insert":
            data[spot:spot] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[spot:spot] = data[spot:spot + draw(st.integers(1, 64))]
    return bytes(data)


@functools.lru_cache(maxsize=4)  # one strategy object per path: built and checked once
def hostile_packets(secret_path: str) -> st.SearchStrategy[bytes]:
    """Any of the above, or plain binary noise."""
    return st.one_of(
        doctype_packets(secret_path), entity_references(secret_path), deep_nesting(),
        mis_encoded(), huge_attributes(), truncated(), with_nul_bytes(), oversized(),
        unknown_commands(), mutated(), st.binary(min_size=1, max_size=2048),
    )
