"""Building command packets, for clients and tests: the reverse of :mod:`jobmonitor.packet`.

:func:`build_packet` is re-exported by :mod:`jobmonitor.packet`; import it from
there.  lxml escapes every name and value, so any text XML can carry reads back
exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

from lxml import etree

from .packet_encoding import ILLEGAL_CHAR, SPACE

__all__ = ["build_packet"]

_PAGEFLEX_NAMESPACE = "http://www.pageflex.com/schemas"
_BUILT_PROLOG = b'<?xml version="1.0" encoding="UTF-8"?>\n<?pf_command version="1.0"?>\n'


def _check_xml_text(what: str, text: str) -> None:
    illegal = ILLEGAL_CHAR.search(text)
    if illegal is not None:
        raise ValueError(f"{what} contains U+{ord(illegal.group()):04X}, which XML cannot carry")


def _check_name(what: str, name: str) -> None:
    if not name.strip(SPACE):
        raise ValueError(f"{what} must not be empty")
    _check_xml_text(what, name)


def build_packet(
    command: str,
    variables: Mapping[str, str] | None = None,
    doc_variables: Mapping[str, str] | None = None,
    *,
    namespace: str | None = _PAGEFLEX_NAMESPACE,
) -> bytes:
    """Build a UTF-8 command packet that :class:`~jobmonitor.packet.PacketParser` reads back.

    ``job_variables`` is always written; ``doc_variables`` only when given and
    not empty.  With ``namespace=None`` the elements have no namespace.

    Raises:
        ValueError: an empty command or variable name, or a character XML
            cannot carry (most C0 controls, lone surrogates, U+FFFE, U+FFFF).
    """
    _check_name("the command", command)

    def tag(local: str) -> str:
        return f"{{{namespace}}}{local}" if namespace else local

    root = etree.Element(tag("job_command"), nsmap={"pfjob": namespace} if namespace else None)
    root.set("name", command)
    sections = [("job_variables", variables or {})]
    if doc_variables:
        sections.append(("doc_variables", doc_variables))
    for section_name, values in sections:
        section = etree.SubElement(root, tag(section_name))
        for name, value in values.items():
            _check_name(f"variable name {name!r}", name)
            _check_xml_text(f"the value of variable {name!r}", value)
            var = etree.SubElement(section, tag("var"))
            var.set("name", name)
            var.text = value
    return _BUILT_PROLOG + etree.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"
