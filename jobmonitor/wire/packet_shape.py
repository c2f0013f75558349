"""A command packet's shape: the elements lxml reports, checked as they come.

``<job_command name="...">`` holds at most one ``<job_variables>`` and one
``<doc_variables>``, each holding ``<var name="...">value</var>`` elements
whose values are plain text; text anywhere else is refused, as is an element
at any other place (which also stops a deeply nested packet at its fourth
level), and a variable past the packet's limit.  Element names are matched by
their local part, so a namespace or a prefix the client forgot to declare
changes nothing.  :class:`PacketShape` turns the start and end events of
lxml's pull parser into the :class:`Packet`; ``packet`` does the bytes, the
encodings and the prolog.

Each var leaves the tree lxml builds once its text and the text after it are
read, so a packet's tree holds a few elements at a time however many
variables it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar
from xml.sax.saxutils import escape

from lxml import etree

from ..errors import PacketError
from .codes import Reply
from .lines import clip
from .packet_encoding import SPACE

__all__ = ["Packet", "PacketWithValueAttributes", "PacketShape", "malformed", "local_name"]

_ROOT = "job_command"
_SECTIONS = ("job_variables", "doc_variables")
_VAR = "var"

_NONE: Mapping[str, str] = MappingProxyType({})  # read-only, so packets may share it


@dataclass(frozen=True, slots=True)
class Packet:
    """One command packet, as read from the wire."""

    command: str  # the job_command name attribute
    variables: Mapping[str, str]  # job_variables, in document order
    doc_variables: Mapping[str, str]  # doc_variables; empty when absent
    if TYPE_CHECKING:
        # To type checkers, a read-only attribute of every packet.  At run time it
        # is a class attribute here and a field of the subclass, and a ClassVar
        # may not become a field in a subclass.
        @property
        def value_attributes(self) -> Mapping[str, str]: ...
    else:
        #: The ``value`` attribute of each blank job_variables var that has one:
        #: none here, some in a :class:`PacketWithValueAttributes`.
        value_attributes: ClassVar[Mapping[str, str]] = _NONE

    def value_hint(self, name: str, *, quote: bool = True) -> str:
        """What to add to an error that job variable ``name`` is missing or blank,
        when it is because the client put its value in a ``value`` attribute:
        " (a variable's value goes in the element's text: ...)", or "".

        The attribute is quoted (as XML text, at most 40 characters) unless
        ``quote`` is False, for a secret.
        """
        attribute = self.value_attributes.get(name)
        if attribute is None or not attribute.strip() or self.variables.get(name, "").strip():
            return ""
        shown = clip(escape(attribute), 40) if quote else "..."
        return (f' (a variable\'s value goes in the element\'s text: <var name="{name}">{shown}'
                f"</var>; the value attribute is ignored)")


@dataclass(frozen=True, slots=True)
class PacketWithValueAttributes(Packet):
    """A packet with ``value`` attributes on job_variables vars whose text is
    blank, as a client may write who guesses the format.  Such an attribute is
    not the value (the text is) and is otherwise ignored: it is kept only for
    :meth:`Packet.value_hint`.  (On a var with text, it is not kept at all.)

    Only the incremental parser makes one: the fast path takes no attribute but
    ``name`` on a var.  A subclass, so that the usual packet, which has none,
    costs no more to make: a fourth field of a frozen dataclass is one more
    ``object.__setattr__`` for every packet.
    """

    value_attributes: Mapping[str, str] = field()


def malformed(detail: str) -> PacketError:
    return PacketError(Reply.MALFORMED_PACKET, detail)


def local_name(tag: str) -> str:
    # "{uri}var" and "pfjob:var" (a prefix the client forgot to declare) are both "var".
    local = tag[tag.rfind("}") + 1 :]
    return local if ":" not in local else local[local.rfind(":") + 1 :]


class PacketShape:
    """Reads one packet's elements from lxml's events (see the module's docstring)."""

    def __init__(self, max_variables: int = 10_000) -> None:
        self._max_variables = max_variables
        self._variables = 0  # in both sections
        #: Local names of the open elements: at most 3.
        self.open_elements: list[str] = []
        self._elements: list[etree._Element] = []  # the open elements themselves
        # The last element closed inside the innermost open one: its tail is the
        # text since then.
        self._previous: etree._Element | None = None
        self._command = ""
        self._sections: dict[str, dict[str, str]] = {}
        self._values: dict[str, str] = {}  # the open section's variables
        self._value_attributes: dict[str, str] = {}  # job_variables' value attributes
        self._var_name = ""

    def read(self, events: Iterable[tuple[str, etree._Element]]) -> Packet | None:
        """Check lxml's next start and end events; the packet once the root closes.

        Raises:
            PacketError: an element, attribute or text the packet's shape does not allow.
        """
        for event, element in events:
            if event == "start":
                self._start(element)
            elif self._end(element):
                variables = MappingProxyType(self._sections.get("job_variables", {}))
                doc_variables = MappingProxyType(self._sections.get("doc_variables", {}))
                if self._value_attributes:
                    return PacketWithValueAttributes(
                        self._command, variables, doc_variables,
                        MappingProxyType(self._value_attributes))
                return Packet(self._command, variables, doc_variables)
        return None

    def _start(self, element: etree._Element) -> None:
        name = local_name(element.tag)
        depth = len(self.open_elements)
        if depth == 2:  # the common case first
            self._check_gap()
            if self._previous is not None:  # the var before: read, and its tail checked
                self._elements[-1].remove(self._previous)
            self._open_var(element, name)
        elif depth == 1:
            self._check_gap()
            self._open_section(name)
        elif depth == 0:
            self._open_root(element, name)
        else:  # also what stops a deep-nesting attack at its fourth level
            var = clip(self._var_name)
            raise malformed(f'element <{clip(name)}> inside <var name="{var}">: '
                            'values are plain text')
        self.open_elements.append(name)
        self._elements.append(element)
        self._previous = None

    def _end(self, element: etree._Element) -> bool:
        """Handle an end tag; True when it closes the root element."""
        name = self.open_elements.pop()
        self._elements.pop()
        if len(self.open_elements) == 2:
            text = self._values[self._var_name] = element.text or ""
            if not text or text.isspace():  # blank: a value attribute may be what was meant
                attribute = element.get("value")
                if attribute is not None and self.open_elements[1] == "job_variables":
                    self._value_attributes[self._var_name] = attribute
        else:
            # A container: check the text after its last child (or its only text).
            _check_no_text(self._gap_text(element), name)
            if not self.open_elements:
                return True
        self._previous = element
        return False

    def release(self) -> None:
        """Let go of lxml's elements (and so of the tree they hold): the packet is
        read, refused or abandoned.  ``open_elements`` stays, for the error."""
        self._elements.clear()
        self._previous = None

    def _open_root(self, element: etree._Element, name: str) -> None:
        if name != _ROOT:
            raise malformed(f"the root element is <{clip(name)}>, not <{_ROOT}>")
        self._command = _name_attribute(element, f"<{_ROOT}>")

    def _open_section(self, name: str) -> None:
        if name not in _SECTIONS:
            raise malformed(f"unexpected element <{clip(name)}> inside <{_ROOT}>")
        if name in self._sections:
            raise malformed(f"<{name}> appears twice")
        self._values = self._sections[name] = {}

    def _open_var(self, element: etree._Element, name: str) -> None:
        section = self.open_elements[1]
        if name != _VAR:
            raise malformed(f"unexpected element <{clip(name)}> inside <{section}>")
        self._variables += 1
        if self._variables > self._max_variables:
            raise PacketError(Reply.PACKET_TOO_LARGE,
                              f"more than {self._max_variables} variables")
        var_name = _name_attribute(element, f"a <var> in <{section}>")
        if var_name in self._values:
            raise malformed(f'variable "{clip(var_name)}" appears twice in <{section}>')
        self._values[var_name] = ""  # takes its place in document order now
        self._var_name = var_name

    def _check_gap(self) -> None:
        """Check the text before a child of the innermost open element."""
        _check_no_text(self._gap_text(self._elements[-1]), self.open_elements[-1])

    def _gap_text(self, parent: etree._Element) -> str | None:
        # The text since the last child closed, or since the parent opened.
        return self._previous.tail if self._previous is not None else parent.text


def _name_attribute(element: etree._Element, what: str) -> str:
    """The element's ``name`` attribute, which must be there and not blank."""
    name = element.get("name")
    if name is None:
        raise malformed(f"{what} has no name attribute")
    if not name.strip(SPACE):
        raise malformed(f"{what} has an empty name attribute")
    return name


def _check_no_text(text: str | None, where: str) -> None:
    # Text outside a var is most likely a value typed in the wrong place.
    if text and text.strip(SPACE):
        raise malformed(f'unexpected text "{clip(text, 20)}" inside <{where}>')
