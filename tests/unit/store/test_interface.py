"""The store interface makes a backend say what every method does.

A backend that leaves one out cannot be made at all, instead of answering
"unknown transaction" (or storing nothing) the day the engine first calls it.
"""

from __future__ import annotations

import inspect

import pytest

from jobmonitor.store.base import Store
from jobmonitor.store.batching import GroupCommitStore
from jobmonitor.store.memory import MemoryStore
from jobmonitor.store.postgres.store import PostgresStore
from jobmonitor.store.sqlite.store import SqliteStore

#: What every backend must define: all of Store's methods.
STORE_METHODS = {"open", "close", "release_lock", "add", "changed", "flush", "call_when_stored",
                 "load", "find_token", "read_lines", "list_records", "delete", "purge", "check"}


def _without(base: type, name: str) -> type:
    """A subclass of ``base`` defining every abstract method but ``name``."""
    def stub(*args: object, **kwargs: object) -> None:
        raise AssertionError("never called")

    body = {method: stub for method in base.__abstractmethods__ if method != name}
    return type(f"Without_{name}", (base,), body)


def test_every_method_of_a_store_is_abstract():
    assert Store.__abstractmethods__ == STORE_METHODS


@pytest.mark.parametrize("name", sorted(STORE_METHODS))
def test_a_store_missing_a_method_cannot_be_made(name):
    incomplete = _without(Store, name)
    with pytest.raises(TypeError, match=name):
        incomplete()


def test_a_group_commit_store_asks_its_backend_for_the_writes_and_the_reads():
    assert GroupCommitStore.__abstractmethods__ == (
        STORE_METHODS - {"add", "changed", "flush", "call_when_stored"}
        | {"job_row", "job_update", "_write_batch", "_refusal"})
    with pytest.raises(TypeError, match="_write_batch"):
        _without(GroupCommitStore, "_write_batch")(commit_interval_s=0.05, outage=None)


@pytest.mark.parametrize("backend", [MemoryStore, SqliteStore, PostgresStore])
def test_each_backend_defines_every_method_itself(backend):
    # Nothing inherited from Store itself: each method is the backend's own (or
    # GroupCommitStore's), with a docstring where it does nothing.
    assert not backend.__abstractmethods__
    for name in STORE_METHODS:
        assert getattr(backend, name) is not getattr(Store, name), name
    if backend is MemoryStore:
        for name in STORE_METHODS:
            assert inspect.getdoc(getattr(MemoryStore, name)), name
