"""Factories for the membership tests (no tests here): unique members, events, clock control."""
import itertools
import uuid

import pytest

from app.platform import clock

_seq = itertools.count()


def uid(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def event(member, type_, at=None, **kw):
    body = {"event_id": uid("ev"), "member_id": member, "type": type_}
    if at:
        body["occurred_at"] = at
    body.update(kw)
    return body


def order(member, yuan, at=None, order_ref=None, **kw):
    return event(member, "order_paid", at, amount_fen=int(yuan * 100), order_ref=order_ref or uid("ord"), **kw)


def post(http, body, expect=201):
    r = http.post("/v1/member-events", json=body)
    assert r.status_code == expect, r.text
    return r.json()


@pytest.fixture()
def frozen_clock():
    """Set the app clock with set_now(); always restored to real time after the test."""
    yield clock.set_now
    clock.set_now(None)


def run_worker_burst(database_url, redis_url):
    """A real `patron worker --burst` process: drains the RQ queue and exits."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PATRON_DATABASE_URL=database_url, PATRON_REDIS_URL=redis_url, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "worker", "--burst"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr
