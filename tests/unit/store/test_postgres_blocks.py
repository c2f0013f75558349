"""The PostgreSQL store's read-ahead of line blocks (``postgres.blocks``)."""

from __future__ import annotations

from jobmonitor.store.postgres import blocks as blocks_module
from jobmonitor.store.postgres.blocks import BlockCache


def lines(first: int, count: int) -> list[bytes]:
    return [b"line %d\r\n" % n for n in range(first, first + count)]


def test_a_page_comes_from_blocks_kept_only_when_they_hold_all_of_it():
    cache = BlockCache()
    cache.keep(1, [(1, lines(1, 3)), (4, lines(4, 2))])
    assert cache.page(1, 2, 4) == lines(2, 4)
    assert cache.page(1, 4, 2) == lines(4, 2)
    assert cache.page(1, 5, 2) is None  # (line 6 may be stored: ask the database)
    assert cache.page(2, 1, 1) is None


def test_a_block_written_again_with_more_lines_replaces_the_one_kept():
    cache = BlockCache()
    cache.keep(1, [(1, lines(1, 2))])
    assert cache.page(1, 1, 3) is None
    cache.keep(1, [(1, lines(1, 4))])
    assert cache.page(1, 1, 3) == lines(1, 3)


def test_the_lines_kept_are_bounded_and_a_job_forgotten_is_gone(monkeypatch):
    monkeypatch.setattr(blocks_module, "MOST_LINES", 5)
    cache = BlockCache()
    cache.keep(1, [(1, lines(1, 3))])
    cache.keep(2, [(1, lines(1, 3))])  # (job 1, read longest ago, goes)
    assert cache.page(1, 1, 1) is None and cache.page(2, 1, 3) == lines(1, 3)
    cache.keep(2, [(4, lines(4, 3))])  # (alone: its earliest block goes)
    assert cache.page(2, 1, 1) is None and cache.page(2, 4, 3) == lines(4, 3)
    cache.forget(2)
    assert cache.page(2, 4, 1) is None
