"""Keyset pagination (app.platform.paging): ties on the first key, rows added while paging, bad cursors."""
import datetime as dt
import uuid

import pytest

from app.errors import Problem
from app.platform import paging


def _walk(fetch, limit):
    seen, cursor = [], None
    for _ in range(100):
        rows, cursor = fetch(cursor, limit)
        seen += rows
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


def test_a_composite_key_walks_ties_once_and_rows_added_meanwhile_are_neither_skipped_nor_repeated(db_conn):
    from app.db import write_transaction
    from app.models.policy import Decision
    from app.policy import decisions
    subject = f"paging:{uuid.uuid4().hex[:8]}"
    same = dt.datetime(2026, 3, 1, 8, 0, 0, 123456)  # every row at one instant: only the id breaks the tie

    def add(n, at=same):
        with write_transaction():
            for i in range(n):
                row = decisions.row("paging", "v1", f"r{i}", subject, {"i": i}, {})
                Decision.insert(**dict(row, created_at=at)).execute()

    add(5)
    everything = [d["decision_id"] for d in decisions.for_subject(subject)]
    for limit in (1, 2, 3, 5, 7):
        got = _walk(lambda c, n: decisions.page(subject, c, n), limit)
        assert [d["decision_id"] for d in got] == everything, limit
    # half way through, rows arrive: one at the same instant (a later id), one earlier than the cursor
    first, cursor = decisions.page(subject, None, 2)
    add(1)
    add(1, at=same - dt.timedelta(seconds=1))
    rest = _walk(lambda c, n: decisions.page(subject, c or cursor, n), 2)
    ids = [d["decision_id"] for d in first + rest]
    assert len(ids) == len(set(ids))  # nothing twice
    assert ids[:5] == everything  # nothing that was there is skipped; the later one follows the cursor
    assert len(ids) == 6  # the earlier one landed behind the cursor: the next walk from the start sees it
    assert len(_walk(lambda c, n: decisions.page(subject, c, n), 3)) == 7


def test_a_cursor_keeps_microseconds_and_refuses_what_it_did_not_make():
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 6)
    assert paging.decode(paging.encode([at, "v", 7]), 3) == [at, "v", 7]
    for bad in ("", "%%%", paging.encode([1, 2]), paging.encode([True, 1, 2]), paging.encode([[1], 1, 2]),
                paging.encode([at, "v", 2**63]), paging.encode([{"t": "2026-01-01T00:00:00+08:00"}, "v", 1]),
                paging.encode([{"t": "not a time"}, "v", 1]), paging.encode([at, "\u0000", 1]),
                paging.encode([at, "\ud800", 1])):
        with pytest.raises(Problem) as exc:
            paging.decode(bad, 3)
        assert exc.value.status == 422 and exc.value.extra["errors"][0]["pointer"] == "/query/cursor"
