"""The metrics renderer's labels and histogram, without a server."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from jobmonitor.http.metrics import _by_project, _finished, _histogram
from jobmonitor.store.timings import Durations
from jobmonitor.wire.states import Outcome


def test_a_project_no_longer_configured_counts_under_an_empty_label():
    rows = _by_project(["a", 'we"ird\\'], {"a": 2, "gone": 3, "also gone": 1})
    assert rows == [('{project="a"}', 2), ('{project="we\\"ird\\\\"}', 0), ('{project=""}', 4)]
    finished = dict(_finished(["a"], {("gone", Outcome.FAILED): 2, ("a", Outcome.SUCCESS): 1}))
    assert finished['{project="a",outcome="success"}'] == 1
    assert finished['{project="",outcome="failed"}'] == 2
    assert finished['{project="a",outcome="cancelled"}'] == 0


def test_commit_durations_are_a_cumulative_histogram():
    durations = Durations((0.01, 0.1))
    for seconds in (0.005, 0.05, 0.05, 3.0):
        durations.observe(seconds)
    out: list[str] = []
    _histogram(out, "x_seconds", "help", durations)
    [family] = text_string_to_metric_families("".join(out))
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("x_seconds_bucket", "0.01")] == 1
    assert samples[("x_seconds_bucket", "0.1")] == 3
    assert samples[("x_seconds_bucket", "+Inf")] == 4
    assert samples[("x_seconds_count", None)] == 4
    assert abs(samples[("x_seconds_sum", None)] - 3.105) < 1e-9
