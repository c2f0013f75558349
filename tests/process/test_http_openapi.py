"""Property-based tests of the HTTP API generated from its own OpenAPI document
(schemathesis): every answer has a documented status, content type and shape, and
no request makes the server fail.  Few examples per operation, to stay quick."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from importlib import resources

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from jobmonitor import Controller, Job, JobMonitor

DOCUMENT = json.loads(resources.files("jobmonitor.http").joinpath(
    "static/openapi.json").read_text())
schema = schemathesis.openapi.from_dict(DOCUMENT)

#: A project name no generated string will hit: only finished jobs exist, so an
#: event stream the tests open always ends.
app = JobMonitor()


@app.job("openapi-echo-project")
async def echo(job: Job) -> None:
    job.info("hello")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    controller = Controller(app, host="127.0.0.1", port=0, http_port=_free_port(),
                            linger_s=0.2, shutdown_grace_s=0.2)
    controller.start()
    assert controller.http is not None
    import urllib.request
    request = urllib.request.Request(
        controller.http.url + "api/v1/jobs", method="POST",
        data=json.dumps({"ProjectName": "openapi-echo-project"}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:  # T0000001, for the cases
        assert answer.status == 201
    yield controller.http.url + "api/v1"
    controller.stop()


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_openapi_document(case, base_url):
    # A schema-valid submission may still be refused, rightly: its project is not one
    # this server runs, or a parameter is a system variable (a schema cannot say so).
    excluded = [positive_data_acceptance] if case.operation.label == "POST /jobs" else []
    case.call_and_validate(base_url=base_url, timeout=10, excluded_checks=excluded)
