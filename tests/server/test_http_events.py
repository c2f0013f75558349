"""Server-sent events of a job's lines, and /metrics, over real HTTP."""

from __future__ import annotations

import h11
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobmonitor.queueing import QueueSettings
from jobmonitor.users import User, hash_password

from ..conftest import finished, release
from ..support.http import HttpClient, basic

API = "/api/v1"



async def read_until(client: HttpClient, text: str, seen: list) -> None:
    """Read line events into ``seen`` until one whose data ends with ``text``."""
    for _ in range(100):
        event = await client.next_event()
        assert event is not None and event.name == "line", event
        seen.append(event)
        if event.data.endswith(text):
            return
    raise AssertionError(f"no line ending with {text!r}")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_stream_resumes_after_a_server_side_drop_without_gap_or_duplicate(
        web, tmp_path, store):
    settings = {"store": f"sqlite:///{tmp_path}/jobs.db"} if store == "sqlite" else {}
    server, http = await web(**settings)
    async with await HttpClient.open(http.port) as client:
        made = await client.post(f"{API}/jobs", json_body={
            "ProjectName": "stepper", "Parameters": {"Key": "s", "Count": "3"}})
        tid = made.json()["Id"]
    seen: list = []
    first = await HttpClient.open(http.port)
    head = await first.open_events(f"{API}/jobs/{tid}/events")
    assert head.status == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert head.headers["cache-control"] == "no-store"
    await read_until(first, "before step 1", seen)
    await release("s")
    await read_until(first, "before step 2", seen)
    for connection in list(http._connections):  # the server drops the stream
        connection.abort()
    with pytest.raises((ConnectionError, OSError, h11.RemoteProtocolError)):
        for _ in range(10):
            assert await first.next_event() is not None
    await first.close()

    async with await HttpClient.open(http.port) as again:
        resumed = await again.open_events(f"{API}/jobs/{tid}/events",
                                          {"Last-Event-ID": seen[-1].id})
        assert resumed.status == 200
        await release("s")
        await read_until(again, "step 2 done", seen)
        await release("s")
        await read_until(again, "ended", seen)
        end = await again.next_event()
        assert end is not None and end.name == "end" and end.id is None
        assert (end.data and '"Outcome": "success"' in end.data and '"Code": "J0000020"'
                in end.data)
        assert await again.next_event() is None  # the response ends
        numbers = [int(event.id) for event in seen]
        assert numbers == list(range(1, len(numbers) + 1))
        wire = await again.get(f"{API}/jobs/{tid}/lines", headers={"Accept": "text/plain"})
        assert [event.data for event in seen] == wire.text.split("\r\n")[:-1]
        # Reconnecting to the ended job with nothing new: 204, which stops an EventSource.
        gone = await again.get(f"{API}/jobs/{tid}/events",
                               headers={"Last-Event-ID": str(numbers[-1])})
        assert gone.status == 204 and gone.body == b""
        # ?from= gives a first connection (which cannot set headers) a start line.
        await again.open_events(f"{API}/jobs/{tid}/events?from={numbers[-1]}")
        last = await again.next_event()
        assert last is not None and last.id == str(numbers[-1])
        assert (await again.next_event()).name == "end"
    assert server.engine.jobs.monitor_total() == 0


async def test_a_finished_job_is_replayed_from_the_store_in_pages(web, tmp_path):
    server, http = await web(store=f"sqlite:///{tmp_path}/jobs.db")
    async with await HttpClient.open(http.port) as client:
        tid = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "lines", "Parameters": {"Count": "2500"}})).json()["Id"]
        await finished(server, tid)
        await server.engine.store.flush()
        await client.open_events(f"{API}/jobs/{tid}/events?from=5")
        events = []
        while (event := await client.next_event()) is not None:
            events.append(event)
        assert [int(e.id) for e in events[:-1]] == list(range(5, 2504))
        assert events[0].data == "J0000100: line 4" and events[-1].name == "end"
        bad = await client.get(f"{API}/jobs/{tid}/events", headers={"Last-Event-ID": "x"})
        assert bad.status == 400 and bad.json()["code"] == "R0005007"


async def test_event_streams_count_against_the_monitor_limit(web):
    server, http = await web(max_monitors_per_job=1)
    async with await HttpClient.open(http.port) as client, \
            await HttpClient.open(http.port) as other:
        tid = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "m"}})).json()["Id"]
        await client.open_events(f"{API}/jobs/{tid}/events")
        assert (await client.next_event()).id == "1"
        busy = await other.get(f"{API}/jobs/{tid}/events")
        assert busy.status == 503 and busy.headers["retry-after"] == "1"
        await release("m")
        await finished(server, tid)


async def test_metrics_parse_as_prometheus_text(web, tmp_path):
    users = (User("root", hash_password("root-pw"), role="admin"),
             User("bob", hash_password("bob-pw")))
    server, http = await web(store=f"sqlite:///{tmp_path}/jobs.db", users=users,
                             queues=(QueueSettings("reports", paused=True),))
    bob = basic("bob", "bob-pw")
    async with await HttpClient.open(http.port, **bob) as client, \
            await HttpClient.open(http.port, **bob) as watcher:
        assert (await client.get("/metrics", headers={"Authorization": ""})).status == 401
        done = (await client.post(f"{API}/jobs", json_body={"ProjectName": "partial"})).json()
        await finished(server, done["Id"])
        waiting = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "wait", "Parameters": {"Key": "w"}})).json()["Id"]
        await watcher.open_events(f"{API}/jobs/{waiting}/events")
        assert (await watcher.next_event()).data.startswith("J0000100")

        answer = await client.get("/metrics")
        assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in families.values() for s in family.samples}
        assert samples[("jobmonitor_jobs_submitted_total", (("project", "partial"),))] == 1
        assert samples[("jobmonitor_jobs_submitted_total", (("project", "echo"),))] == 0
        assert samples[("jobmonitor_jobs_finished_total",
                        (("outcome", "partial"), ("project", "partial")))] == 1
        assert samples[("jobmonitor_jobs_running", ())] == 1
        assert samples[("jobmonitor_jobs_queued", ())] == 0
        assert samples[("jobmonitor_jobs_suspended", ())] == 0
        assert samples[("jobmonitor_monitors", ())] == 1
        assert samples[("jobmonitor_connections", (("transport", "http"),))] == 2
        assert samples[("jobmonitor_connections", (("transport", "tcp"),))] == 0
        assert samples[("jobmonitor_lines_sent_total", ())] >= 1
        # Configured queues have labels of their own; a queue a submit named, ""
        own = (await client.post(f"{API}/jobs", json_body={
            "ProjectName": "echo", "Queue": "made-up", "DelaySeconds": 3600})).json()
        assert own["Queue"] == "made-up"
        answer = await client.get("/metrics")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(answer.text)
                   for s in family.samples}
        queues = {labels: value for (name, labels), value in samples.items()
                  if name == "jobmonitor_queue_jobs"}
        assert queues == {
            (("queue", "default"), ("state", "waiting")): 0,
            (("queue", "default"), ("state", "running")): 1,
            (("queue", "default"), ("state", "scheduled")): 0,
            (("queue", "reports"), ("state", "waiting")): 0,
            (("queue", "reports"), ("state", "running")): 0,
            (("queue", "reports"), ("state", "scheduled")): 0,
            (("queue", ""), ("state", "waiting")): 0,
            (("queue", ""), ("state", "running")): 0,
            (("queue", ""), ("state", "scheduled")): 1}
        assert {labels: value for (name, labels), value in samples.items()
                if name == "jobmonitor_queue_paused"} == {
            (("queue", "default"),): 0, (("queue", "reports"),): 1}
        assert samples[("jobmonitor_store_commit_duration_seconds_count", ())] >= 1
        assert families["jobmonitor_jobs_finished"].type == "counter"
        assert families["jobmonitor_store_commit_duration_seconds"].type == "histogram"
        labels = {value for family in families.values() for s in family.samples
                  for value in s.labels.values()}
        assert not any(value.startswith("T0") or value in ("bob", "root") for value in labels)
        assert labels <= set(server.engine.handler_names()) | {
            "success", "partial", "failed", "cancelled", "tcp", "http", "0.1.0", "default",
            "reports", "", "waiting", "running", "scheduled"} | {
            s.labels["le"] for s in families["jobmonitor_store_commit_duration_seconds"].samples
            if "le" in s.labels}
        await release("w")
        await finished(server, waiting)


async def test_health_and_readiness(web):
    _server, http = await web()
    async with await HttpClient.open(http.port) as client:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        http.closing = True  # (as close() sets it: a stopping server is not ready)
        assert (await client.get("/readyz")).status == 503
