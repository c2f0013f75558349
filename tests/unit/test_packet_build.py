"""The packet builder writes, with the standard library, what lxml writes for the same tree.

The client builds its packets without lxml, so a client command need not import
it; these tests hold the builder to lxml's serialization, byte for byte, and to
the parser reading every packet back.
"""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from jobmonitor.wire.packet import Packet, PacketParser
from jobmonitor.wire.packet_build import build_packet

PAGEFLEX = "http://www.pageflex.com/schemas"
XML_CHARACTERS = st.characters(
    exclude_categories=["Cs"], exclude_characters="\ufffe\uffff", min_codepoint=0x20
) | st.sampled_from("\t\n\r&<>\"']")
NAMES = st.text(XML_CHARACTERS, min_size=1, max_size=20).filter(
    lambda name: name.strip(" \t\r\n") != "")
VALUES = st.text(XML_CHARACTERS, max_size=60)


def built_by_lxml(command: str, variables: dict[str, str], doc_variables: dict[str, str],
                  namespace: str | None) -> bytes:
    """The packet as the builder wrote it with lxml before."""

    def tag(local: str) -> str:
        return f"{{{namespace}}}{local}" if namespace else local

    root = etree.Element(tag("job_command"), nsmap={"pfjob": namespace} if namespace else None)
    root.set("name", command)
    sections = [("job_variables", variables)]
    if doc_variables:
        sections.append(("doc_variables", doc_variables))
    for section_name, values in sections:
        section = etree.SubElement(root, tag(section_name))
        for name, value in values.items():
            var = etree.SubElement(section, tag("var"))
            var.set("name", name)
            var.text = value
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n<?pf_command version="1.0"?>\n'
            + etree.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n")


@settings(max_examples=300, deadline=None)
@given(command=NAMES, variables=st.dictionaries(NAMES, VALUES, max_size=6),
       doc_variables=st.dictionaries(NAMES, VALUES, max_size=3),
       namespace=st.sampled_from([PAGEFLEX, None, "http://www.pageflexinc.com/schemas"]))
def test_the_bytes_are_lxmls_and_read_back(command, variables, doc_variables, namespace):
    data = build_packet(command, variables, doc_variables, namespace=namespace)
    assert data == built_by_lxml(command, variables, doc_variables, namespace)
    assert PacketParser().feed(data) == Packet(command, variables, doc_variables)


def test_what_needs_escaping_is_escaped():
    data = build_packet('a"b', {"x\ty": "<&>\r\n\t'\"]]>", "empty": ""}, namespace=None)
    assert data.split(b"\n", 2)[2] == (
        b'<job_command name="a&quot;b"><job_variables>'
        b'<var name="x&#9;y">&lt;&amp;&gt;&#13;\n\t\'"]]&gt;</var>'
        b'<var name="empty"></var></job_variables></job_command>\n')
    assert build_packet("X", namespace=None).endswith(
        b'<job_command name="X"><job_variables/></job_command>\n')


def test_a_client_command_does_not_import_lxml_or_the_server():
    # What `jobmonitor status` imports before it sends its packet.
    code = ("import sys; import jobmonitor.cli.main, jobmonitor.client; "
            "from jobmonitor.wire.packet_build import build_packet; "
            "build_packet('X', {'a': 'b'}); "
            "heavy = sorted(name for name in sys.modules if name.split('.')[0] == 'lxml' "
            "or name in ('sqlite3', 'tomllib', 'hashlib') or name.startswith(("
            "'jobmonitor.server', 'jobmonitor.engine', 'jobmonitor.store', "
            "'jobmonitor.programs', 'jobmonitor.app'))); print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout == "[]\n"
