"""The HTTP API over real HTTP against a real server: every endpoint, every error
mapping, auth and per-user scoping, cross-origin refusal, limits."""

from __future__ import annotations

import asyncio
import json
import ssl

import pytest

from jobmonitor.errors import ConfigError
from jobmonitor.http import HttpServer
from jobmonitor.users import User, hash_password

from ..conftest import finished, release
from ..support.helpers import exchange, submit
from ..support.http import HttpClient, basic

API = "/api/v1"
ADMIN = User("root", hash_password("root-pw"), role="admin")
BOB = User("bob", hash_password("bob-pw"))
CAT = User("cat", hash_password("cat-pw"))



async def test_every_endpoint_over_one_kept_alive_connection(web):
    server, http = await web()
    async with await HttpClient.open(http.port) as client:
        made = await client.post(f"{API}/jobs", json_body={
            "ProjectName": "output", "JobName": "Flyers",
            "Parameters": {"Name": "a.pdf", "Uri": "file:///a.pdf"}})
        assert made.status == 201
        tid = made.json()["Id"]
        assert made.headers["location"] == f"{API}/jobs/{tid}"
        assert made.json()["Address"] == f"{API}/jobs/{tid}"
        await finished(server, tid)

        status = await client.get(f"{API}/jobs/{tid}")
        assert status.status == 200 and status.headers["content-type"] == "application/json"
        body = status.json()
        assert (body["JobName"], body["Status"], body["Address"]) == ("Flyers", 3,
                                                                      f"{API}/jobs/{tid}")
        history = (await client.get(f"{API}/jobs/{tid}?history=true")).json()["History"]
        assert [event["Status"] for event in history][:2] == ["queued", "start"]
        xml = await client.get(f"{API}/jobs/{tid}", headers={"Accept": "application/xml"})
        assert xml.headers["content-type"].startswith("application/xml")
        assert "<Status>Completed</Status>" in xml.text
        assert f"<Address>{API}/jobs/{tid}</Address>" in xml.text

        outputs = await client.get(f"{API}/jobs/{tid}/outputs")
        assert outputs.json() == [{"Name": "a.pdf", "Uri": "file:///a.pdf", "MediaType": None,
                                   "Partial": False}]

        lines = (await client.get(f"{API}/jobs/{tid}/lines?from=2")).json()
        assert lines["From"] == 2 and lines["Total"] == 3 and lines["Next"] == 4
        assert lines["Lines"] == ["J0000020: Job completed successfully.",
                                  f"J0000001: Transaction {tid} ended"]
        wire = await client.get(f"{API}/jobs/{tid}/lines", headers={"Accept": "text/plain"})
        assert wire.body == (b"J0000100: Machine name: testhost\r\n"
                             b"J0000020: Job completed successfully.\r\n"
                             + f"J0000001: Transaction {tid} ended\r\n".encode())

        waiting = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "k1"}})).json()["Id"]
        listed = (await client.get(f"{API}/jobs")).json()
        assert [job["Id"] for job in listed["Jobs"]] == [waiting] and listed["Next"] is None
        assert listed["Jobs"][0]["Address"] == f"{API}/jobs/{waiting}"
        everything = (await client.get(f"{API}/jobs?filter=all")).json()["Jobs"]
        assert [job["Id"] for job in everything] == [tid, waiting]
        first = (await client.get(f"{API}/jobs?filter=all&limit=1")).json()
        assert ([job["Id"] for job in first["Jobs"]], first["Next"]) == ([tid], tid)
        second = (await client.get(f"{API}/jobs?filter=all&limit=1&after={tid}")).json()
        assert [job["Id"] for job in second["Jobs"]] == [waiting]
        assert (await client.get(f"{API}/jobs?limit=0")).json()["code"] == "R0005007"
        assert (await client.get(f"{API}/queue")).json() == {"Queued": 0, "Running": 1}
        assert "wait" in (await client.get(f"{API}/projects")).json()

        suspended = await client.post(f"{API}/jobs/{waiting}/suspend")  # (requested)
        assert suspended.status == 200 and suspended.json()["Id"] == waiting
        cancelled = await client.post(f"{API}/jobs/{waiting}/cancel")
        assert cancelled.status == 200
        await finished(server, waiting)
        assert (await client.get(f"{API}/jobs/{waiting}")).json()["Status"] == 6
        deleted = await client.request("DELETE", f"{API}/jobs/{tid}")
        assert deleted.status == 204 and deleted.body == b""
        assert (await client.get(f"{API}/jobs/{tid}")).status == 404

        document = (await client.get(f"{API}/openapi.json")).json()
        assert document["openapi"].startswith("3.")
        assert (await client.get("/healthz")).text == "ok\n"
        assert (await client.get("/readyz")).text == "ready\n"


async def test_suspend_and_resume_a_queued_job(web):
    server, http = await web(max_running=1)
    async with await HttpClient.open(http.port) as client:
        first = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "q1"}})).json()["Id"]
        second = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "echo"})).json()["Id"]
        suspended = await client.post(f"{API}/jobs/{second}/suspend")
        assert suspended.json()["Status"] == 7
        resumed = await client.post(f"{API}/jobs/{second}/resume")
        assert resumed.json()["Status"] == 1
        again = await client.post(f"{API}/jobs/{second}/resume")
        assert again.status == 409 and again.json()["code"] == "R0005010"
        await release("q1")
        await finished(server, first)
        await finished(server, second)


async def test_a_job_token_names_the_earlier_job_with_200(web):
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        body = {"ProjectName": "echo", "JobToken": "order-7"}
        first = await client.post(f"{API}/jobs", json_body=body)
        second = await client.post(f"{API}/jobs", json_body=body)
        assert (first.status, second.status) == (201, 200)
        assert first.json()["Id"] == second.json()["Id"]
        assert "location" not in second.headers


async def test_errors_are_problems_with_the_r_code_and_status(web):
    server, http = await web(max_running=1, max_queued_jobs=1)
    async with await HttpClient.open(http.port) as client:

        async def problem(method, path, status, code, **kwargs):
            answer = await client.request(method, path, **kwargs)
            assert answer.status == status, answer.body
            assert answer.headers["content-type"] == "application/problem+json"
            document = answer.json()
            assert (document["status"], document["code"]) == (status, code)
            return answer

        await problem("GET", f"{API}/jobs/T0009999", 404, "R0005009")
        await problem("GET", f"{API}/nothing", 404, "R0005005")
        await problem("PUT", f"{API}/jobs", 405, "R0005005")
        await problem("GET", f"{API}/jobs?filter=some", 400, "R0005007")
        await problem("POST", f"{API}/jobs", 400, "R0005008", json_body={"ProjectName": "nope"})
        await problem("POST", f"{API}/jobs", 400, "R0005006", json_body={"JobName": "x"})
        await problem("POST", f"{API}/jobs", 400, "R0005000", body=b"{not json",
                      headers={"Content-Type": "application/json"})
        await problem("POST", f"{API}/jobs", 400, "R0005007", json_body={
            "ProjectName": "echo", "Parameters": {"_sys_User": "root"}})
        await problem("POST", f"{API}/jobs", 415, "R0005001", body=b"ProjectName=echo",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        await problem("GET", f"{API}/jobs/T0000001", 406, "R0005007",
                      headers={"Accept": "image/png"})
        await problem("GET", f"{API}/jobs/T0000001/lines?from=0", 400, "R0005007")
        done = (await client.post(f"{API}/jobs", json_body={"ProjectName": "echo"})).json()["Id"]
        await finished(server, done)
        await problem("POST", f"{API}/jobs/{done}/cancel", 409, "R0005010")
        running = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "e1"}})).json()["Id"]
        await problem("DELETE", f"{API}/jobs/{running}", 409, "R0005010")
        await client.post(f"{API}/jobs", json_body={"ProjectName": "echo"})  # queued
        busy = await problem("POST", f"{API}/jobs", 503, "R0005011",
                             json_body={"ProjectName": "echo"})
        assert busy.headers["retry-after"] == "1"
        allowed = await client.request("PUT", f"{API}/jobs/{running}")
        assert allowed.headers["allow"] == "GET, DELETE"
        await release("e1")


async def test_basic_auth_roles_and_per_user_scoping(web):
    _server, http = await web(users=(ADMIN, BOB, CAT))
    async with await HttpClient.open(http.port) as client:
        anonymous = await client.get(f"{API}/jobs")
        assert anonymous.status == 401 and anonymous.json()["code"] == "R0005012"
        assert anonymous.headers["www-authenticate"].startswith('Basic realm="jobmonitor"')
        wrong = await client.get(f"{API}/jobs", headers=basic("bob", "nope"))
        assert wrong.status == 401
        assert (await client.get("/", headers={})).status == 401  # the page asks to log in

        bobs = await client.post(f"{API}/jobs", json_body={"ProjectName": "echo"},
                                 headers=basic("bob", "bob-pw"))
        assert bobs.status == 201 and bobs.json()["Identity"] == "bob"
        tid = bobs.json()["Id"]
        cats = await client.get(f"{API}/jobs/{tid}", headers=basic("cat", "cat-pw"))
        assert cats.status == 404 and cats.json()["code"] == "R0005009"  # never "forbidden"
        for path in (f"{API}/jobs/{tid}/lines", f"{API}/jobs/{tid}/outputs",
                     f"{API}/jobs/{tid}/events"):
            assert (await client.get(path, headers=basic("cat", "cat-pw"))).status == 404
        cat_list = await client.get(f"{API}/jobs?filter=all", headers=basic("cat", "cat-pw"))
        assert cat_list.json() == {"Jobs": [], "Next": None}
        root_list = await client.get(f"{API}/jobs?filter=all", headers=basic("root", "root-pw"))
        assert [job["Id"] for job in root_list.json()["Jobs"]] == [tid]
        page = await client.get("/", headers=basic("cat", "cat-pw"))
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")


async def test_refused_credentials_and_permissions_are_logged_as_over_tcp(web, caplog):
    _server, http = await web(users=(ADMIN, BOB))
    caplog.set_level("WARNING", logger="jobmonitor.security")
    async with await HttpClient.open(http.port) as client:
        assert (await client.get(f"{API}/jobs")).status == 401  # no credentials: a prompt
        assert (await client.get(f"{API}/jobs", headers=basic("bob", "nope"))).status == 401
        assert (await client.get(f"{API}/jobs", headers=basic("eve", "x"))).status == 401
    assert [record.getMessage() for record in caplog.records
            if record.name == "jobmonitor.security"] == [
        "event=login_failed peer=127.0.0.1 user=bob command=ListJobs reason=wrong_password",
        "event=login_failed peer=127.0.0.1 user=eve command=ListJobs reason=unknown_user"]


async def test_the_tcp_port_and_the_api_see_the_same_jobs(web):
    server, http = await web()
    lines = await exchange(server.port, submit("echo", A="1"))
    tid = lines[0].split(": ")[1]
    async with await HttpClient.open(http.port) as client:
        job = (await client.get(f"{API}/jobs/{tid}")).json()
        assert job["Parameters"] == "ProjectName=echo;A=1"
        text = (await client.get(f"{API}/jobs/{tid}/lines", headers={"Accept": "text/plain"}))
        assert text.text.split("\r\n")[:-1] == lines[1:]


async def test_cross_origin_state_changes_are_refused(web):
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        body = {"ProjectName": "echo"}
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
            refused = await client.post(f"{API}/jobs", json_body=body, headers=headers)
            assert refused.status == 403 and refused.json()["code"] == "R0005013", headers
        assert (await client.get(f"{API}/jobs?filter=all")).json()["Jobs"] == []
        own = f"http://127.0.0.1:{http.port}"
        for headers in ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {}):
            accepted = await client.post(f"{API}/jobs", json_body=body, headers=headers)
            assert accepted.status == 201
        # Reading is not refused (no CORS headers let another site's page read it).
        assert (await client.get(f"{API}/queue", headers={"Origin": "http://evil.example"})
                ).status == 200


async def test_an_open_http_listener_is_refused_beyond_loopback(make_server):
    server = await make_server()
    with pytest.raises(ConfigError, match="reachable from the network"):
        HttpServer(server, host="0.0.0.0", port=0)
    assert HttpServer(server, host="::1", port=0).config is server.config


async def test_limits_and_malformed_requests(web):
    _server, http = await web(max_packet_bytes=1000, idle_timeout_s=0.3, packet_timeout_s=0.5)

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()

    assert (await raw(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")).startswith(
        b"HTTP/1.1 400 ")
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(100))
    assert (await raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")).startswith(
        b"HTTP/1.1 431 ")
    assert (await raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000)).startswith(
        b"HTTP/1.1 431 ")
    big = b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    assert (await raw(big)).startswith(b"HTTP/1.1 413 ")
    late = await raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
    assert late.startswith(b"HTTP/1.1 408 ")
    assert await raw(b"") == b""  # silent: closed after idle_timeout_s without a word
    # Two pipelined requests are answered in order on one connection.
    two = await raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /api/v1/queue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2 and two.endswith(b'{"Queued":0,"Running":0}')


async def test_static_files_and_security_headers(web):
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        page = await client.get("/")
        assert page.status == 200 and b'src="/static/app.js"' in page.body
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        script = await client.get("/static/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/static/../server.py")).status == 404
        assert (await client.get("/static/nothing.js")).status == 404
        assert (await client.request("POST", "/healthz")).status == 405
        head = await client.request("HEAD", "/healthz")
        assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "3"


async def test_the_listener_closes_with_the_server(web):
    _server, http = await web()
    client = await HttpClient.open(http.port)
    assert (await client.get("/healthz")).status == 200
    http.close()
    # An idle kept-alive connection is closed, and nothing new is accepted.
    assert await asyncio.wait_for(client.reader.read(), 5) == b""
    await client.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", http.port)
    await http.wait_closed()
    assert http.connection_count == 0


def test_config_has_the_http_settings():
    from jobmonitor.config import Config

    assert Config().http_port == 0 and Config().http_host is None
    with pytest.raises(ConfigError, match=r"http_port: must be 0\.\.65535"):
        Config(http_port=70000)
    assert json.dumps(Config(http_port=7401, http_host="::1").http_port) == "7401"


async def test_the_http_listener_serves_the_servers_tls_certificate(web, tmp_path):
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    _server, http = await web(tls_cert=str(tmp_path / "cert.pem"),
                             tls_key=str(tmp_path / "key.pem"))
    assert http.url.startswith("https://")
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with await HttpClient.open(http.port, ssl=context) as client:
        assert (await client.get("/healthz")).text == "ok\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # plain text: no answer
    assert not (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_connections_beyond_max_connections_are_told_busy(web):
    _server, http = await web(max_connections=1)
    async with await HttpClient.open(http.port) as first:
        assert (await first.get("/healthz")).status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
        refused = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"code": "R0005011"' in refused and b"Retry-After: 1" in refused
        assert (await first.get("/healthz")).status == 200  # the first goes on
