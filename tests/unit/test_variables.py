"""The protocol's own variables, and the re-attach notice, in one module both
sides use: what the server writes, the client reads back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobmonitor.errors import RequestError
from jobmonitor.wire import variables
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet import Packet
from jobmonitor.wire.variables import (
    SYSTEM_PREFIX,
    behind_notice,
    behind_notice_line,
    parse_bool,
    parse_choice,
    parse_line_number,
    required,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_system_variable_the_docs_name_is_spelled_here_and_no_other():
    documented = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        documented.update(re.findall(r"_sys_[A-Za-z]+", path.read_text()))
    defined = {value for name, value in vars(variables).items()
               if name.isupper() and isinstance(value, str) and value.startswith(SYSTEM_PREFIX)
               and value != SYSTEM_PREFIX}
    assert defined == documented


def test_the_notice_is_the_line_servers_have_always_sent():
    assert behind_notice(3) == (
        b"J0005003: Monitor fell too far behind: re-attach with MonitorJob from line 3\r\n")


@pytest.mark.parametrize("next_line", [1, 2, 1000, 9_999_999_999])
def test_the_client_reads_back_the_line_the_notice_names(next_line):
    notice = behind_notice(next_line)
    assert behind_notice_line(notice) == next_line
    assert behind_notice_line(notice.rstrip(b"\r\n")) == next_line


@pytest.mark.parametrize("raw", [
    b"J0000100: Monitor fell too far behind: re-attach with MonitorJob from line 3\r\n",
    b"J0005003: Monitor fell too far behind\r\n",
    b"J0005003: Monitor fell too far behind: re-attach with MonitorJob from line x\r\n",
    b"J0005003- Monitor fell too far behind: re-attach with MonitorJob from line 3\r\n",
    b"J0000100: one\r\n",
])
def test_other_lines_are_not_the_notice(raw):
    assert behind_notice_line(raw) is None


def _packet(**values: str) -> Packet:
    return Packet("SubmitJob", dict(values), {})


def test_the_parsers_read_values():
    assert parse_bool(_packet(Flag=" YES "), "Flag") is True
    assert parse_bool(_packet(), "Flag", default=True) is True
    assert parse_choice(_packet(), "Choice", ("text", "json")) == "text"
    assert parse_line_number(_packet(Line="12"), "Line") == 12
    assert required(_packet(Name=" x "), "Name") == "x"


@pytest.mark.parametrize("read, code", [
    (lambda: parse_bool(_packet(Flag="maybe"), "Flag"), Reply.INVALID_VALUE),
    (lambda: parse_choice(_packet(C="xml"), "C", ("text",)), Reply.INVALID_VALUE),
    (lambda: parse_line_number(_packet(L="\u00b2"), "L"), Reply.INVALID_VALUE),
    (lambda: parse_line_number(_packet(L="0"), "L"), Reply.INVALID_VALUE),
    (lambda: required(_packet(Name=" "), "Name"), Reply.MISSING_VARIABLE),
])
def test_the_parsers_refuse_with_the_protocols_codes(read, code):
    with pytest.raises(RequestError) as raised:
        read()
    assert raised.value.code == code
