"""Authentication, ownership, TLS, exposure checks and limits, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import time

import pytest

from jobmonitor import ConfigError, Controller
from jobmonitor.users import User, hash_password, verify_password

from ..conftest import release
from ..process.test_cli import ROOT
from ..support import jobs
from ..support.helpers import Session, exchange, split_lines, submit, xml_packet

ANN = User("ann", hash_password("ann-pw"))
BOB = User("bob", hash_password("bob-pw"))
ROOT_USER = User("root", hash_password("root-pw"), role="admin")
USERS = (ANN, BOB, ROOT_USER)


def as_user(packet_vars: dict[str, str], user: str, password: str) -> dict[str, str]:
    return {**packet_vars, "_sys_User": user, "_sys_Password": password}


def job_packet(user: str, password: str, project: str = "echo", monitor: bool = False,
               **variables: str) -> bytes:
    values = {"ProjectName": project, **variables}
    if monitor:
        values["_sys_ClientJobMonitor"] = "true"
    return xml_packet("SubmitJob", as_user(values, user, password))


def tid_of(reply: str) -> str:
    assert reply.startswith("R0000000: T"), reply
    return reply.removeprefix("R0000000: ")


# -- passwords ------------------------------------------------------------------------------


def test_password_hashes_verify_and_are_salted():
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("pw", first) and not verify_password("pW", first)
    assert "password_hash" not in repr(ANN) and ANN.password_hash not in repr(ANN)


def test_bad_user_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"users\.x\.role: must be user or admin"):
        User("x", hash_password("p"), role="root")
    with pytest.raises(ConfigError, match=r"users\.x\.password_hash: not a hash made by"):
        User("x", "plaintext")


def test_hash_password_command_reads_stdin():
    result = subprocess.run([sys.executable, "-m", "jobmonitor", "hash-password"], cwd=ROOT,
                            input="s3cret pass\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert verify_password("s3cret pass", result.stdout.strip())
    empty = subprocess.run([sys.executable, "-m", "jobmonitor", "hash-password"], cwd=ROOT,
                           input="", capture_output=True, text=True, timeout=30)
    assert empty.returncode == 2 and "no password" in empty.stderr


# -- authentication and ownership -----------------------------------------------------------------


async def test_packets_without_valid_credentials_are_refused(make_server):
    server = await make_server(users=USERS)
    assert await exchange(server.port, submit("echo")) == [
        "R0005012: Not authenticated: give _sys_User and _sys_Password"]
    assert await exchange(server.port, job_packet("ann", "wrong")) == [
        "R0005012: Not authenticated: wrong user or password"]
    assert await exchange(server.port, job_packet("nobody", "ann-pw")) == [
        "R0005012: Not authenticated: wrong user or password"]
    lines = await exchange(server.port, job_packet("ann", "ann-pw", monitor=True))
    assert lines[-2] == "J0000020: Job completed successfully."


async def test_credentials_in_value_attributes_are_named_in_the_reply(make_server):
    server = await make_server(users=USERS)

    def packet(user: str, password: str) -> bytes:
        return ('<job_command name="SubmitJob"><job_variables>'
                f'<var name="ProjectName">echo</var>{user}{password}'
                "</job_variables></job_command>").encode()

    hint = ("(a variable's value goes in the element's text: <var name=\"{}\">{}</var>; "
            "the value attribute is ignored)")
    password = '<var name="_sys_Password" value="ann-pw"/>'
    both = packet('<var name="_sys_User" value="ann"/>', password)
    assert await exchange(server.port, both) == [
        "R0005012: Not authenticated: give _sys_User and _sys_Password "
        + hint.format("_sys_User", "ann")]
    # The password is never quoted back.
    assert await exchange(server.port, packet('<var name="_sys_User">ann</var>', password)) == [
        "R0005012: Not authenticated: wrong user or password "
        + hint.format("_sys_Password", "...")]
    assert await exchange(server.port, packet("", password)) == [
        "R0005012: Not authenticated: give _sys_User and _sys_Password "
        + hint.format("_sys_Password", "...")]
    text = packet('<var name="_sys_User" value="bob">ann</var>',
                  '<var name="_sys_Password" value="x">ann-pw</var>')
    assert (await exchange(server.port, text))[0].startswith("R0000000: T")


async def test_the_authenticated_user_is_the_identity_and_owns_the_job(make_server):
    server = await make_server(users=USERS)
    tid = tid_of((await exchange(server.port, job_packet(
        "ann", "ann-pw", "wait", Key="own", _sys_UserToken="someone-else")))[0])
    mine = await exchange(server.port, xml_packet("GetJobStatus", as_user(
        {"_sys_TransactionID": tid}, "ann", "ann-pw")))
    assert "R0000000- Identity: ann" in mine
    for command in ("GetJobStatus", "MonitorJob", "CancelJob", "SuspendJob", "DeleteJob",
                    "GetJobInformation", "RetrieveJob", "GetTaskLog"):
        theirs = await exchange(server.port, xml_packet(command, as_user(
            {"_sys_TransactionID": tid}, "bob", "bob-pw")))
        assert theirs == [f"R0005009: Unknown transaction: {tid}"], command
        # In lower case too, answered as a job that does not exist is: in its canonical
        # form (an echo of the spelling sent would tell the two apart).
        theirs = await exchange(server.port, xml_packet(command, as_user(
            {"_sys_TransactionID": tid.lower()}, "bob", "bob-pw")))
        assert theirs == [f"R0005009: Unknown transaction: {tid}"], command
    assert await exchange(server.port, xml_packet("ListJobs", as_user({}, "bob", "bob-pw"))) \
        == ["R0000000: 0 jobs"]
    listed = await exchange(server.port, xml_packet("ListJobs", as_user({}, "root", "root-pw")))
    assert listed[0] == "R0000000- 1 jobs"
    cancelled = await exchange(server.port, xml_packet("CancelJob", as_user(
        {"_sys_TransactionID": tid}, "root", "root-pw")))
    assert cancelled == [f"R0000000: {tid}"]
    await release("own")


async def test_job_tokens_name_the_callers_own_jobs_and_an_admin_names_the_user(make_server):
    server = await make_server(users=USERS)
    ann_tid = tid_of((await exchange(server.port, job_packet(
        "ann", "ann-pw", _sys_JobToken="nightly")))[0])
    bob_tid = tid_of((await exchange(server.port, job_packet(
        "bob", "bob-pw", _sys_JobToken="nightly")))[0])
    assert ann_tid != bob_tid

    async def status(user: str, password: str, **variables: str) -> list[str]:
        return await exchange(server.port, xml_packet("GetJobStatus", as_user(
            {"_sys_JobToken": "nightly", "_sys_Format": "json", **variables}, user, password)))

    assert ann_tid in (await status("ann", "ann-pw"))[0]
    # A user's _sys_UserToken is not theirs to choose: still their own job.
    assert ann_tid in (await status("ann", "ann-pw", _sys_UserToken="bob"))[0]
    assert bob_tid in (await status("root", "root-pw", _sys_UserToken="bob"))[0]
    assert ann_tid in (await status("root", "root-pw", _sys_UserToken="ann"))[0]
    assert (await status("root", "root-pw"))[0].startswith("R0005009: Unknown transaction")


async def test_admin_only_commands(make_server):
    server = await make_server(users=USERS)
    for command in ("RestartServer", "GetTaskLog"):
        refused = await exchange(server.port, xml_packet(command, as_user({}, "ann", "ann-pw")))
        assert refused[0].startswith("R0005013: Permission denied"), refused
    log = await exchange(server.port, xml_packet("GetTaskLog", as_user({}, "root", "root-pw")))
    assert log == ["R0000000: 0 events"]


async def test_repeated_failures_from_one_address_are_slowed_down(make_server):
    server = await make_server(users=USERS)
    timings = []
    for _ in range(6):
        started = time.monotonic()
        await exchange(server.port, job_packet("ann", "nope"))
        timings.append(time.monotonic() - started)
    # the first failures answer at once; later ones wait 0.25 s, 0.5 s, 1 s
    assert max(timings[:3]) < 0.25
    assert timings[3] >= 0.25 and timings[4] >= 0.5 and timings[5] >= 1.0
    ok = await exchange(server.port, job_packet("ann", "ann-pw"))
    assert ok[0].startswith("R0000000: T")  # the right password is never refused


# -- exposure -------------------------------------------------------------------------------------


def test_open_server_refuses_a_network_address():
    with pytest.raises(ConfigError, match="no users are configured"):
        Controller(jobs.app, host="0.0.0.0", port=0).start()


def test_open_server_on_a_network_address_when_allowed(caplog):
    with Controller(jobs.app, host="0.0.0.0", port=0, allow_anonymous_network=True) as running:
        assert running.port > 0
    assert "without authentication" in caplog.text


def test_cli_refuses_network_address_without_users():
    result = subprocess.run(
        [sys.executable, "-m", "jobmonitor", "serve", "--host", "0.0.0.0", "--port", "0",
         "--store", "memory://"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--allow-anonymous-network" in result.stderr and "Traceback" not in result.stderr


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    authority.cert_pem.write_to_path(str(folder / "ca.pem"))
    return folder


async def test_tls_serves_the_same_protocol(make_server, certificate):
    server = await make_server(tls_cert=str(certificate / "cert.pem"),
                               tls_key=str(certificate / "key.pem"))
    context = ssl.create_default_context(cafile=str(certificate / "ca.pem"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    writer.write(submit("partial"))
    lines = split_lines(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    with contextlib.suppress(ssl.SSLError):
        await writer.wait_closed()
    assert lines[-2:] == ["J0000021: Job only partially completed.",
                          f"J0000001: Transaction {tid_of(lines[0])} ended"]
    assert not server.accepts_corked  # a TLS handshake must not wait in the kernel
    # a plain-text client gets nothing it could mistake for a reply
    plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", server.port)
    plain_writer.write(submit("echo"))
    data = await asyncio.wait_for(plain_reader.read(), 10)
    plain_writer.close()
    assert not data.startswith(b"R0000000")


async def test_tls_connections_log_no_asyncio_warning(make_server, certificate, caplog):
    """asyncio warns when a TLS connection's protocol asks to stay half-open."""
    server = await make_server(tls_cert=str(certificate / "cert.pem"),
                               tls_key=str(certificate / "key.pem"))
    context = ssl.create_default_context(cafile=str(certificate / "ca.pem"))
    for packet in (submit("echo"), xml_packet("GetJobQueueLen")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        writer.write(packet)
        assert split_lines(await asyncio.wait_for(reader.read(), 10))[0].startswith("R0000000")
        writer.close()
        with contextlib.suppress(ssl.SSLError):
            await writer.wait_closed()
    await asyncio.wait_for(server._no_connections.wait(), 10)  # both closed on our side
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def test_tls_certificate_that_cannot_load_is_a_start_up_error(tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="tls_cert: cannot load"):
        Controller(jobs.app, port=0, tls_cert=str(tmp_path / "bad.pem"),
                   tls_key=str(tmp_path / "bad.pem")).start()
    with pytest.raises(ConfigError, match="give both or neither"):
        Controller(jobs.app, port=0, tls_cert=str(tmp_path / "bad.pem"))


# -- limits ---------------------------------------------------------------------------------------


async def test_connections_beyond_the_limit_get_a_busy_reply(make_server):
    server = await make_server(max_connections=3, idle_timeout_s=30)
    # Connected before the fourth: the server accepts them, and counts them, first.
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    assert await exchange(server.port, submit("echo")) == [
        "R0005011: Server busy: too many connections"]
    for _, writer in held:
        writer.close()
        await writer.wait_closed()
    await asyncio.wait_for(server.wait_connections_closed(), 5)
    assert (await exchange(server.port, submit("echo")))[-2] == \
        "J0000020: Job completed successfully."


async def test_a_silent_connection_is_closed_at_the_idle_limit(make_server):
    server = await make_server(idle_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    assert split_lines(data) == [
        "R0005014: Connection idle too long: nothing received within 0.2 s"]


async def test_monitors_per_job_are_limited(make_server):
    server = await make_server(max_monitors_per_job=2)
    tid = tid_of((await exchange(server.port, submit("wait", monitor=False, Key="mm")))[0])
    watchers = [await Session.open(server.port, xml_packet("MonitorJob", {
        "_sys_TransactionID": tid})) for _ in range(2)]
    for watcher in watchers:
        assert await watcher.line() == f"R0000000: {tid}"
    assert await exchange(server.port, xml_packet("MonitorJob", {"_sys_TransactionID": tid})) \
        == [f"R0005011: Server busy: {tid} already has 2 monitors"]
    await release("mm")
    for watcher in watchers:
        assert (await watcher.rest())[-1] == f"J0000001: Transaction {tid} ended"
        await watcher.close()


async def test_queue_limit_refuses_submits_as_busy(make_server):
    server = await make_server(max_running=1, max_queued_jobs=1)
    await exchange(server.port, submit("wait", monitor=False, Key="q"))
    await exchange(server.port, submit("echo", monitor=False))
    assert await exchange(server.port, submit("echo", monitor=False)) == [
        "R0005011: Server busy: 1 jobs are already waiting"]
    await release("q")


async def test_a_tls_handshake_must_finish_within_the_packet_timeout(make_server, certificate):
    server = await make_server(tls_cert=str(certificate / "cert.pem"), packet_timeout_s=0.5,
                               tls_key=str(certificate / "key.pem"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), 10) == b""
    assert time.monotonic() - started < 5
    writer.close()


async def test_an_unknown_user_costs_the_same_check_as_a_wrong_password():
    from jobmonitor.server.auth import Authenticator

    auth = Authenticator(USERS)
    checked = []
    import jobmonitor.server.auth as auth_module

    real = auth_module.verify_password
    auth_module.verify_password = lambda password, stored: checked.append(stored) or real(
        password, stored)
    try:
        assert await auth.authenticate("nobody", "x", "10.0.0.1") is None
        assert await auth.authenticate("ann", "x", "10.0.0.2") is None
    finally:
        auth_module.verify_password = real
        await auth.close()
    assert len(checked) == 2 and all(stored.startswith("scrypt$") for stored in checked)


def test_made_up_encoding_names_take_no_memory_for_good():
    """The standard library remembers every name codecs.lookup was asked for, found
    or not: a peer's made-up names and spellings must never reach it."""
    import encodings

    from jobmonitor.errors import PacketError
    from jobmonitor.wire.packet import PacketParser

    def feed(label: str) -> PacketError | None:
        packet = (f'<?xml version="1.0" encoding="{label}"?>'
                  '<job_command name="GetBuildString"/>').encode()
        try:
            PacketParser().feed(packet)
        except PacketError as exc:
            return exc
        return None

    assert feed("UTF-8") is None and feed("latin_1") is None  # (the known ones are remembered)
    before = len(encodings._cache)  # type: ignore[attr-defined]
    for number in range(2000):
        assert "unknown encoding" in feed(f"x{number}").detail  # type: ignore[union-attr]
        assert feed("utf" + "-" * (number % 30 + 1) + "8") is None
    assert len(encodings._cache) - before < 10  # type: ignore[attr-defined]


async def test_guesses_sent_in_parallel_take_their_turn(make_server):
    """The throttle is per address, not per connection: guesses sent on many
    connections at once are checked one after another, each after the delay the
    failure before it earned, and the right password among them waits its turn."""
    server = await make_server(users=USERS)
    started = time.monotonic()

    async def attempt(password: str) -> tuple[str, float]:
        lines = await exchange(server.port, job_packet("ann", password))
        return lines[0], time.monotonic() - started

    wrong = [asyncio.create_task(attempt(f"guess-{number}")) for number in range(5)]
    await asyncio.sleep(0.2)  # all five are being checked or waiting their turn
    reply, elapsed = await attempt("ann-pw")
    assert reply.startswith("R0000000: T")
    # 3 free failures, then 0.25 s after the fourth and 0.5 s after the fifth
    assert elapsed >= 0.75
    for refused, _ in await asyncio.gather(*wrong):
        assert refused == "R0005012: Not authenticated: wrong user or password"


async def test_failures_are_counted_per_ipv6_network_and_mapped_ipv4_address():
    """One IPv6 host has a /64 of addresses to pick from: counted per address, it
    could take a new one for every three guesses."""
    from jobmonitor.server.auth import Authenticator, throttled_address
    from jobmonitor.server.throttle import throttled_network

    assert throttled_address("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert throttled_address("fe80::1%eth0") == "fe80::/64"
    assert throttled_address("::ffff:10.0.0.7") == throttled_address("10.0.0.7") == "10.0.0.7"
    assert throttled_network("::ffff:10.0.0.7") == throttled_network("10.0.0.9") == "10.0.0.0/24"
    assert throttled_network("2001:db8:1:2:aaaa::1") == "2001:db8:1::/48"
    assert throttled_network("fe80::1%eth0") == "fe80::/48"
    auth = Authenticator(USERS)
    try:
        for number in range(3):
            assert await auth.authenticate("ann", "guess", f"2001:db8::{number + 1}") is None
        started = time.monotonic()
        assert await auth.authenticate("ann", "guess", "2001:db8::99") is None
        assert time.monotonic() - started >= 0.25  # the fourth failure of that /64
        started = time.monotonic()
        assert await auth.authenticate("ann", "guess", "2001:db8:0:1::1") is None
        assert time.monotonic() - started < 0.25  # another /64
    finally:
        await auth.close()
