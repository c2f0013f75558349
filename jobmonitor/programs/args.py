"""How a program project's command takes job variables, and what a value may be.

Each item of a command is a template: literal text and ``{name}`` slots (``{{``
and ``}}`` stand for literal braces).  A value fills its slot inside one
argument, so it can never add, split or remove an argument; what else it may
do is up to the program, so a project can hold each variable to rules:

- every value: no NUL character (no program could be given one);
- ``Variable(kind="name")``: a plain file name (see ``Variable``);
- ``Variable(pattern=...)``: a regular expression the whole value must match;
- a value that starts an argument: no leading ``-`` (``allow_leading_dash``);
- an argument in which ``{output_dir}`` is followed by a variable
  (``{output_dir}/{name}``): the text from ``{output_dir}`` to the end of the
  argument is a path that must stay inside the job's output folder.  It must
  go on from ``{output_dir}`` with ``/`` and, once filled, hold no ``..``
  component (checked at submit); nor may it lead out through a symbolic link
  (checked when the job starts, once the folder exists).

The checks here return why a value is refused, in words for the submit's reply
(``programs`` raises it as INVALID_VALUE), or None.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ..errors import ConfigError
from ..wire.lines import clip

__all__ = ["Variable", "Variables", "KINDS", "NAME_MAX_BYTES", "BUILTIN_PLACEHOLDERS"]

#: Placeholders every program may use besides its declared variables.
BUILTIN_PLACEHOLDERS = frozenset({"transaction_id", "output_dir"})
#: The kinds of value a ``Variable`` may be: any text, or a plain file name.
KINDS = ("text", "name")
#: The longest file name most file systems take (NAME_MAX), in UTF-8 bytes.
NAME_MAX_BYTES = 255

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What a builtin placeholder stands for while a path is checked at submit, when
#: the job has no transaction ID yet (neither can hold a '..' component).
_STAND_INS = {"transaction_id": "T0000000", "output_dir": "/output_dir"}


@dataclass(frozen=True, slots=True)
class Variable:
    """The rules one job variable of a program project is held to.

    ``kind`` is ``"text"`` (the default: any value without a NUL character) or
    ``"name"``: a plain file name, which is not empty, not ``.`` or ``..``, holds
    no ``/``, ``\\`` or control character, does not start with ``-`` (whatever
    ``allow_leading_dash`` says) and is at most 255 UTF-8 bytes long.
    ``pattern``, if given, is a regular expression (Python's ``re``) that the
    whole value must match.  A value must keep every rule given.

    Raises (on construction):
        ConfigError: an unknown kind, or a pattern that is empty or not a
        regular expression; the message starts with the field's name.
    """

    kind: str = "text"
    pattern: str | None = None
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                              compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind: must be {' or '.join(map(repr, KINDS))}, got {self.kind!r}")
        if self.pattern is None:
            return
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigError("pattern: must be a regular expression (leave it out for none), "
                              f"got {self.pattern!r}")
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"pattern: must be a regular expression, got {self.pattern!r} "
                              f"({exc})") from None
        object.__setattr__(self, "_compiled", compiled)

    def refusal(self, value: str) -> str | None:
        """Why ``value`` breaks these rules, as words that follow the variable's
        name in a reply; None when it keeps them."""
        if self.kind == "name":
            why = _not_a_plain_name(value)
            if why is not None:
                return f'is not a plain file name (kind "name"): it {why}'
        if self._compiled is not None and self._compiled.fullmatch(value) is None:
            return f"does not match its pattern {clip(self.pattern or '', 80)}"
        return None


def _not_a_plain_name(value: str) -> str | None:
    if not value:
        return "is empty"
    if value in (".", ".."):
        return f"is '{value}'"
    for separator in ("/", "\\"):
        if separator in value:
            return f"holds '{separator}'"
    if value.startswith("-"):
        return "starts with '-'"
    if _CONTROL.search(value):
        return "holds a control character"
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"is longer than {NAME_MAX_BYTES} bytes"
    return None


#: What ``Program(variables=...)`` takes: the names of variables without rules,
#: or each name with its ``Variable`` (in the order its checks are made).
Variables = Iterable[str] | Mapping[str, Variable]


def variable_rules(variables: Variables) -> Mapping[str, Variable]:
    """Each variable's name and rules, checked, in the order given.

    Raises:
        ConfigError: not names or a mapping of names to ``Variable``; a name
        that is not valid, given twice or reserved.
    """
    if isinstance(variables, str) or not isinstance(variables, Iterable):
        raise ConfigError("variables: must be a list of names, or a mapping of each name "
                          f"to its Variable, got {variables!r}")
    pairs = (list(variables.items()) if isinstance(variables, Mapping)
             else [(name, Variable()) for name in variables])
    rules: dict[str, Variable] = {}
    for name, rule in pairs:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"variables: {name!r} is not a valid name "
                              "(letters, digits and _, not starting with a digit)")
        if name in rules or name in BUILTIN_PLACEHOLDERS or name.startswith("_sys_"):
            raise ConfigError(f"variables: {name!r} is listed twice or is reserved")
        if not isinstance(rule, Variable):
            raise ConfigError(f"variables.{name}: must be a Variable, got {rule!r}")
        rules[name] = rule
    return MappingProxyType(rules)


# -- templates -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """A ``{name}`` placeholder inside an argv item."""

    name: str


Template = tuple[str | Slot, ...]


def parse_template(item: str, where: str, names: frozenset[str]) -> Template:
    """Split an argv item into literal text and placeholders.

    Raises:
        ConfigError: a lone brace, or a placeholder that names no variable.
    """
    parts: list[str | Slot] = []
    position = 0
    for match in _TOKEN.finditer(item):
        parts.append(item[position:match.start()])
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif name is None:
            raise ConfigError(f"{where}: lone {token!r} in {item!r} "
                              f"(write {token * 2} for a brace)")
        elif name not in names:
            raise ConfigError(f"{where}: placeholder {{{name}}} is not a declared variable "
                              f"(variables: {', '.join(sorted(names))})")
        else:
            parts.append(Slot(name))
        position = match.end()
    parts.append(item[position:])
    return tuple(part for part in parts if part != "")


def leading_slot(template: Template, values: Mapping[str, str]) -> Slot | None:
    """The placeholder whose value the filled argument starts with.

    Empty values are skipped: with ``{a}{b}``, a="" and b="-rf" the argument is
    ``-rf``.  None when the argument starts with literal text or a built-in
    placeholder (a transaction ID or an absolute folder, never '-').
    """
    for part in template:
        if isinstance(part, str) or part.name in BUILTIN_PLACEHOLDERS:
            return None
        if values.get(part.name):
            return part
    return None


# -- paths under output_dir ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputPath:
    """The text of an argument from its first ``{output_dir}`` on, where a
    variable follows: a path that must stay inside the job's output folder."""

    tail: Template  # the parts after {output_dir}
    variables: tuple[str, ...]  # the variables among them, in order

    def refusal(self, values: Mapping[str, str]) -> str | None:
        """Why these values would take the path out of the job's folder, a
        phrase that starts with the variables to blame; None when it stays in."""
        text, spans = _fill(self.tail, {**values, **_STAND_INS})
        problem = _path_problem(text)
        if problem is None:
            return None
        start, end, reason = problem
        # The values in the wrong component; else the empty ones at its edge.
        blamed = ([name for name, (first, last) in spans if max(first, start) < min(last, end)]
                  or [name for name, (first, last) in spans if start <= first == last <= end])
        names = ", ".join(dict.fromkeys(blamed)) or ", ".join(self.variables)
        return f"{names} would lead out of the job's output folder ({reason})"

    def link_refusal(self, values: Mapping[str, str], folder: Path) -> str | None:
        """Why the filled path, symbolic links followed, is outside ``folder``
        (the job's output folder, which exists); None when it is inside.
        ``values`` holds every placeholder's value, ``output_dir`` too."""
        text, _ = _fill(self.tail, values)
        inside = os.path.realpath(folder)
        resolved = os.path.realpath(values["output_dir"] + text)
        if os.path.commonpath([inside, resolved]) == inside:
            return None
        return (f"{', '.join(self.variables)} would lead out of the job's output folder "
                "(through a symbolic link)")


def output_path(template: Template, where: str) -> OutputPath | None:
    """The path to guard in one argument, if ``{output_dir}`` is followed by a
    variable in it.

    Raises:
        ConfigError: the command's own text takes that path out of the folder
        (it does not go on with '/', or has a '..' component).
    """
    try:
        start = template.index(Slot("output_dir"))
    except ValueError:
        return None
    tail = template[start + 1:]
    variables = tuple(dict.fromkeys(part.name for part in tail if isinstance(part, Slot)
                                    and part.name not in BUILTIN_PLACEHOLDERS))
    if not variables:
        return None
    # A NUL stands for each variable (no literal text holds one): a component
    # with one is not '..', and a variable may be the one to go on with '/'.
    text, _ = _fill(tail, {**dict.fromkeys(variables, "\x00"), **_STAND_INS})
    problem = _path_problem("/" + text if text.startswith("\x00") else text)
    if problem is not None:
        raise ConfigError(f"{where}: leads out of the job's output folder whatever the value "
                          f"of {variables[0]} ({problem[2]}); a path from {{output_dir}} that "
                          "takes a variable must stay inside it")
    return OutputPath(tail, variables)


def _fill(tail: Template,
          values: Mapping[str, str]) -> tuple[str, list[tuple[str, tuple[int, int]]]]:
    """The filled text, and where each variable's value lies in it."""
    pieces: list[str] = []
    spans: list[tuple[str, tuple[int, int]]] = []
    length = 0
    for part in tail:
        piece = part if isinstance(part, str) else values[part.name]
        if isinstance(part, Slot) and part.name not in BUILTIN_PLACEHOLDERS:
            spans.append((part.name, (length, length + len(piece))))
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces), spans


def _path_problem(text: str) -> tuple[int, int, str] | None:
    """Where and why ``text``, the path after the job's folder, leaves it."""
    if text and not text.startswith("/"):
        end = text.find("/")
        return 0, len(text) if end < 0 else end, "the path must go on from {output_dir} with '/'"
    start = 0
    for component in text.split("/"):
        end = start + len(component)
        if component == "..":
            return start, end, "a path component is '..'"
        start = end + 1
    return None
