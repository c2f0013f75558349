"""The operator's log of refusals: one key=value warning per failed login and per
permission refused, never the password, and a bounded number under guessing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging

import pytest

from jobmonitor.server import throttle
from jobmonitor.server.refusals import LINES_PER_WINDOW, RefusalLog
from jobmonitor.users import User
from jobmonitor.wire.codes import Reply
from jobmonitor.wire.packet_shape import Packet

from ..support.helpers import exchange, xml_packet
from .test_security import USERS, as_user, job_packet

SECURITY = "jobmonitor.security"


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == SECURITY]


def cheap_user(name: str, password: str) -> User:
    """A user whose hash takes microseconds to check (N = 2), for many guesses."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    encode = base64.b64encode
    return User(name, f"scrypt$2$1$1${encode(salt).decode()}${encode(digest).decode()}")


async def test_a_wrong_password_is_one_warning_with_peer_user_and_command(make_server, caplog):
    server = await make_server(users=USERS)
    refused = await exchange(server.port, job_packet("ann", "a-secret-guess"))
    assert refused == ["R0005012: Not authenticated: wrong user or password"]
    [record] = refusals(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("event=login_failed peer=127.0.0.1 user=ann "
                                   "command=SubmitJob reason=wrong_password")
    assert record.fields == {"event": "login_failed", "peer": "127.0.0.1",  # type: ignore[attr-defined]
                             "user": "ann", "command": "SubmitJob", "reason": "wrong_password"}
    assert "a-secret-guess" not in caplog.text


async def test_unknown_users_and_missing_credentials_say_so(make_server, caplog):
    server = await make_server(users=USERS)
    await exchange(server.port, job_packet('mallory "x"\nevent=forged', "pw"))
    await exchange(server.port, xml_packet("ListJobs"))
    messages = [record.getMessage() for record in refusals(caplog)]
    # a name with spaces and quotes is quoted, and cannot start a line of its own
    assert messages == [
        'event=login_failed peer=127.0.0.1 user="mallory \\"x\\" event=forged" '
        "command=SubmitJob reason=unknown_user",
        'event=login_failed peer=127.0.0.1 user="" command=ListJobs reason=no_user']


async def test_a_permission_refusal_is_one_warning(make_server, caplog):
    server = await make_server(users=USERS)
    refused = await exchange(server.port, xml_packet("RestartServer",
                                                     as_user({}, "ann", "ann-pw")))
    assert refused[0].startswith("R0005013: Permission denied")
    [record] = refusals(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == ("event=permission_denied peer=127.0.0.1 user=ann "
                                   "command=RestartServer")
    assert "ann-pw" not in caplog.text
    # an accepted packet logs nothing here
    await exchange(server.port, xml_packet("GetTaskLog", as_user({}, "root", "root-pw")))
    assert len(refusals(caplog)) == 1


async def test_fifty_throttled_guesses_from_one_address_log_a_bounded_number_of_lines(
        make_server, caplog, monkeypatch):
    # The throttle's delays made short (its longest is 5 s): the guesses are still
    # throttled, one at a time, but 50 of them take a second, not minutes.
    monkeypatch.setattr(throttle, "MAX_FAILURE_DELAY_S", 0.01)
    server = await make_server(users=(cheap_user("eve", "right"),))
    for number in range(50):
        assert await exchange(server.port, job_packet("eve", f"guess-{number}")) == [
            "R0005012: Not authenticated: wrong user or password"]
    assert len(refusals(caplog)) == LINES_PER_WINDOW  # the rest are counted
    server.close()
    await server.wait_closed()  # a stop writes the summaries of the open windows
    lines = [record.getMessage() for record in refusals(caplog)]
    assert len(lines) == LINES_PER_WINDOW + 1
    assert lines[-1] == ("event=login_failed_summary peer=127.0.0.1 "
                         f"count={50 - LINES_PER_WINDOW} window_s=60")


async def test_a_window_with_refusals_past_its_limit_sums_them_up_when_it_ends(caplog):
    summed_up = asyncio.Event()

    class Waiter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "_summary" in record.getMessage():
                summed_up.set()

    waiter = Waiter()
    logging.getLogger(SECURITY).addHandler(waiter)
    try:
        log = RefusalLog(["ann"], lines_per_window=2, window_s=0.2)
        packet = Packet("SubmitJob", {"_sys_User": "ann"}, {})
        for _ in range(5):
            log.refused(Reply.NOT_AUTHENTICATED, lambda: "2001:db8::7", packet)
        log.refused(Reply.UNKNOWN_PROJECT, lambda: "2001:db8::7", packet)  # not logged
        assert len(refusals(caplog)) == 2
        await asyncio.wait_for(summed_up.wait(), 5)
    finally:
        logging.getLogger(SECURITY).removeHandler(waiter)
    assert refusals(caplog)[-1].getMessage() == (
        "event=login_failed_summary peer=2001:db8::7 count=3 window_s=0.2")
    log.refused(Reply.NOT_AUTHENTICATED, lambda: "2001:db8::8", packet)  # a new window
    assert len(refusals(caplog)) == 4


async def test_the_fail2ban_filter_in_the_docs_matches_failed_logins(make_server, caplog,
                                                                     monkeypatch):
    import re
    from pathlib import Path

    from jobmonitor.cli.logs import TEXT_FORMAT

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    [failregex] = re.findall(r"^failregex = (.*)$", doc, re.MULTILINE)
    # fail2ban's <HOST> (an address, then the rest of the pattern must follow)
    pattern = re.compile(failregex.replace("<HOST>", r"(?P<host>[0-9A-Fa-f:.]+)"))
    monkeypatch.setattr(throttle, "MAX_FAILURE_DELAY_S", 0.01)
    server = await make_server(users=(cheap_user("eve", "right"), *USERS))
    for number in range(LINES_PER_WINDOW + 2):
        await exchange(server.port, job_packet("eve", f"guess-{number}"))
    await exchange(server.port, xml_packet("RestartServer", as_user({}, "ann", "ann-pw")))
    server.close()
    await server.wait_closed()
    formatter = logging.Formatter(TEXT_FORMAT)
    hosts = [match.group("host") for record in refusals(caplog)
             if (match := pattern.search(formatter.format(record)))]
    assert hosts == ["127.0.0.1"] * (LINES_PER_WINDOW + 1)  # not the permission refusal
