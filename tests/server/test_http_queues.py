"""The HTTP API's queues, nodes and reruns over real HTTP against a real server:
each is the TCP command it names, with its roles and refusals."""

from __future__ import annotations

from jobmonitor.queueing import QueueSettings
from jobmonitor.users import User, hash_password

from ..conftest import finished, release
from ..support.helpers import exchange, xml_packet
from ..support.http import HttpClient, basic

API = "/api/v1"
ADMIN = User("root", hash_password("root-pw"), role="admin")
BOB = User("bob", hash_password("bob-pw"))



async def test_queues_are_listed_paused_and_resumed(web):
    server, http = await web(queues=(QueueSettings("reports", max_running=2),))
    async with await HttpClient.open(http.port) as client:
        assert (await client.get(f"{API}/queues")).json() == [
            {"Name": "default", "Waiting": 0, "Running": 0, "MaxRunning": 8, "Paused": False,
             "Scheduled": 0},
            {"Name": "reports", "Waiting": 0, "Running": 0, "MaxRunning": 2, "Paused": False,
             "Scheduled": 0}]
        paused = await client.post(f"{API}/queues/reports/pause")
        assert paused.status == 200
        assert paused.json() == {"Name": "reports", "Waiting": 0, "Running": 0,
                                 "MaxRunning": 2, "Paused": True, "Scheduled": 0}
        # A job of the paused queue waits, however it was submitted.
        made = await client.post(f"{API}/jobs", json_body={
            "ProjectName": "echo", "Queue": "reports", "Priority": 7})
        assert made.status == 201
        tid = made.json()["Id"]
        assert (made.json()["Queue"], made.json()["Priority"]) == ("reports", 7)
        (reply,) = await exchange(server.port, xml_packet("SubmitJob", {
            "ProjectName": "echo", "_sys_QueueName": "reports",
            "_sys_ClientJobMonitor": "false"}))
        by_tcp = reply.split(": ")[1]
        assert (await client.get(f"{API}/jobs/{tid}")).json()["Status"] == 1  # Queued
        assert [q["Waiting"] for q in (await client.get(f"{API}/queues")).json()] == [0, 2]
        resumed = await client.post(f"{API}/queues/reports/resume")
        assert resumed.status == 200 and resumed.json()["Paused"] is False
        for job in (tid, by_tcp):
            await finished(server, job)
            assert (await client.get(f"{API}/jobs/{job}")).json()["Status"] == 3


async def test_an_idle_queue_of_its_own_is_answered_too(web):
    # A queue nobody configured, with no job: resuming it answers its row (the
    # server keeps no such queue once it is idle and not paused).
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        resumed = await client.post(f"{API}/queues/nightly%2Fbig/resume")
        assert resumed.status == 200
        assert resumed.json() == {"Name": "nightly/big", "Waiting": 0, "Running": 0,
                                  "MaxRunning": 8, "Paused": False, "Scheduled": 0}
        paused = await client.post(f"{API}/queues/nightly%2Fbig/pause")
        assert paused.json()["Paused"] is True
        listed = (await client.get(f"{API}/queues")).json()
        assert [q["Name"] for q in listed] == ["default", "nightly/big"]


async def test_a_submission_places_its_job_as_the_packet_would(web):
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        later = await client.post(f"{API}/jobs", json_body={
            "ProjectName": "echo", "RunAt": "2999-01-01T00:00:00+01:00"})
        assert later.status == 201
        assert (later.json()["Status"], later.json()["Due"]) == (0, "2998-12-31T23:00:00Z")
        delayed = await client.post(f"{API}/jobs", json_body={
            "ProjectName": "echo", "DelaySeconds": 3600})
        assert delayed.json()["Status"] == 0 and delayed.json()["Due"] is not None
        for fields, detail in (
                ({"Priority": 10}, "_sys_Priority"), ({"Priority": "7"}, "Priority must be"),
                ({"Priority": True}, "Priority must be"), ({"DelaySeconds": -1}, "_sys_Delay"),
                ({"DelaySeconds": "5"}, "DelaySeconds must be"), ({"Queue": 5}, "Queue must"),
                ({"RunAt": "tomorrow"}, "_sys_RunAt"), ({"Queue": "a b"}, "_sys_QueueName"),
                ({"RunAt": "2999-01-01T00:00:00Z", "DelaySeconds": 1}, "not both")):
            refused = await client.post(f"{API}/jobs", json_body={"ProjectName": "echo",
                                                                  **fields})
            assert (refused.status, refused.json()["code"]) == (400, "R0005007"), fields
            assert detail in refused.json()["detail"], (fields, refused.json())
        listed = (await client.get(f"{API}/jobs?filter=all")).json()["Jobs"]
    assert [job["Id"] for job in listed] == [later.json()["Id"], delayed.json()["Id"]]


async def test_queue_changes_are_for_administrators_and_names_are_checked(web):
    _server, http = await web(users=(ADMIN, BOB))
    async with await HttpClient.open(http.port) as client:
        as_bob = basic("bob", "bob-pw")
        as_root = basic("root", "root-pw")
        refused = await client.post(f"{API}/queues/default/pause", headers=as_bob)
        assert (refused.status, refused.json()["code"]) == (403, "R0005013")
        assert (await client.get(f"{API}/queues", headers=as_bob)).status == 200
        assert (await client.get(f"{API}/nodes", headers=as_bob)).status == 403
        bad = await client.post(f"{API}/queues/no%20spaces/pause", headers=as_root)
        assert (bad.status, bad.json()["code"]) == (400, "R0005007")
        assert "no spaces" in bad.json()["detail"]
        wrong = await client.get(f"{API}/queues/default/pause", headers=as_root)
        assert (wrong.status, wrong.headers["allow"]) == (405, "POST")
        assert (await client.post(f"{API}/queues/default/stop", headers=as_root)).status == 404
        done = await client.post(f"{API}/queues/default/pause", headers=as_root)
        assert done.json()["Paused"] is True


async def test_a_single_server_lists_itself_as_its_node(web):
    server, http = await web()
    async with await HttpClient.open(http.port) as client:
        (node,) = (await client.get(f"{API}/nodes")).json()
    assert (node["Name"], node["Address"], node["Running"]) == (
        "testhost", f"127.0.0.1:{server.port}", 0)
    assert node["HeartbeatAge"] == 0 and node["Started"].endswith("Z")


async def test_a_rerun_is_a_new_job_with_its_address(web):
    server, http = await web()
    async with await HttpClient.open(http.port) as client:
        first = (await client.post(f"{API}/jobs", json_body={"ProjectName": "echo"})).json()
        await finished(server, first["Id"])
        again = await client.post(f"{API}/jobs/{first['Id']}/rerun")
        assert again.status == 201
        tid = again.json()["Id"]
        assert tid != first["Id"] and again.headers["location"] == f"{API}/jobs/{tid}"
        await finished(server, tid)
        history = (await client.get(f"{API}/jobs/{tid}?history=true")).json()["History"]
        assert (history[0]["Status"], history[0]["Info"]) == ("rerun", first["Id"])
        busy = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "http-rerun"}})).json()["Id"]
        refused = await client.post(f"{API}/jobs/{busy}/rerun")
        assert (refused.status, refused.json()["code"]) == (409, "R0005010")
        await release("http-rerun")
        await finished(server, busy)
