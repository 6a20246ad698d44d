"""Tickets benchmark: creation/s with routing over HTTP, and one SLA-watch tick over N open tickets.

Usage:
    .venv/bin/python bench/tickets/bench_tickets.py [--backend sqlite|postgres] [--open 100000]
        [--creates 400] [--clients 4] [--due-percent 1]

Prints a table; each figure has a reference measured in the same run (an authenticated GET on the
same server for HTTP; a naive Python scan of the same open tickets for the watcher) and the ratio.
"""
from app.platform import clock
import argparse
import datetime as dt
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import close_database, database  # noqa: E402

def rate(session_factory, clients, total, fn):
    """Run ``fn(session, i)`` ``total`` times over ``clients`` threads; returns (per second, p99 ms)."""
    latencies = []
    lock = threading.Lock()
    local = threading.local()

    def one(i):
        if not hasattr(local, "s"):
            local.s = session_factory()
        t0 = time.perf_counter()
        fn(local.s, i)
        with lock:
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return total / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


def bench_http(app, clients, creates):
    import requests
    from werkzeug.serving import make_server

    from app.db import db
    from app.platform.auth import create_key
    with app.app_context(), db.connection_context():
        token, _ = create_key("bench", ["admin"])
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"

    def session():
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        return s

    cats = ["退款争议", "物流/配送", "发票", "投诉", "退换货", "商品质量", "账户/会员"]

    def create(s, i):
        r = s.post(base + "/v1/tickets", headers={"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}, json={
            "category": cats[i % len(cats)], "title": f"问题 {i}", "body": "快递 投诉 发票"[i % 3:],
            "user_id": f"bench-u{i}", "amount_fen": (i * 7919) % 300000, "channel": "app",
            "user": {"level": ["注册", "金牌", "钻石"][i % 3], "paid": i % 5 == 0}})
        assert r.status_code == 201, r.text

    def read(s, i):
        r = s.get(base + "/v1/ticket-workflows")
        assert r.status_code == 200

    rate(session, clients, 20, create)  # warm-up (rules compile, pools fill)
    ref, ref_p99 = rate(session, clients, creates, read)
    got, p99 = rate(session, clients, creates, create)
    srv.shutdown()
    return got, p99, ref, ref_p99


def seed_open_tickets(n, due_percent):
    """n open tickets; due_percent% past their warning time and due_percent% past their due time."""
    from app.db import db, write_transaction
    from app.models.tickets import Ticket
    now = clock.now()
    rows = []
    k = max(1, n * due_percent // 100)
    for i in range(n):
        created = now - dt.timedelta(minutes=30)
        if i < k:  # warning due
            warn, due = now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=5)
        elif i < 2 * k:  # breach due
            warn, due = now - dt.timedelta(minutes=10), now - dt.timedelta(minutes=1)
        else:
            warn = now + dt.timedelta(minutes=10 + i % 1000)
            due = warn + dt.timedelta(minutes=30)
        rows.append({"category": "物流/配送", "workflow": "standard", "state": "in_progress", "title": f"t{i}",
                     "channel": "app", "source": "system", "user_id": f"u{i}", "department": "logistics",
                     "queue": "delivery", "priority": "P3", "created_by": "bench", "created_at": created,
                     "updated_at": created, "state_entered_at": created, "policy_version": "bench",
                     "sla_calendar": "always", "response_metric": None,
                     "resolution_warn_at": warn, "resolution_due_at": due, "resolution_check_at": warn})
    with db.connection_context():
        for start in range(0, n, 2000):
            with write_transaction():
                Ticket.insert_many(rows[start:start + 2000]).execute()
    return 2 * k


def naive_scan(now):
    """The reference: load every open ticket and decide in Python (what the watcher must not do)."""
    from app.db import db
    from app.models.tickets import Ticket
    with db.connection_context():
        hits = 0
        for row in Ticket.select(Ticket.id, Ticket.resolution_warn_at, Ticket.resolution_due_at,
                                 Ticket.sla_paused_at).where(Ticket.terminal == False).tuples():  # noqa: E712
            _, warn, due, paused = row
            if paused is None and due is not None and (warn <= now or due <= now):
                hits += 1
        return hits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--open", type=int, default=100_000)
    ap.add_argument("--creates", type=int, default=400)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--due-percent", type=int, default=1)
    ap.add_argument("--skip-http", action="store_true", help="only the SLA-watch part")
    args = ap.parse_args()

    import logging
    logging.disable(logging.INFO)
    from app import create_app, policy
    from app.db import db
    from app.migrations import upgrade
    from app.services.tickets import sla as tickets_sla

    url, cleanup = database(args.backend)
    try:
        app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade()
            policy.startup(app)
        logging.disable(logging.INFO)
        got = p99 = ref = ref_p99 = None
        if not args.skip_http:
            got, p99, ref, ref_p99 = bench_http(app, args.clients, args.creates)

        with app.app_context():
            expected = seed_open_tickets(args.open, args.due_percent)
            now = clock.now()
            t0 = time.perf_counter()
            hits = naive_scan(now)
            scan = time.perf_counter() - t0
            with db.connection_context():
                t0 = time.perf_counter()
                result = tickets_sla.watch(now=now)
                tick = time.perf_counter() - t0
                t0 = time.perf_counter()
                again = tickets_sla.watch(now=now)
                idle = time.perf_counter() - t0
        assert result["warnings"] + result["breaches"] >= expected == hits, (result, expected, hits)
        assert again["warnings"] + again["breaches"] == 0

        print(f"\nTickets benchmark — backend {args.backend}, {args.clients} HTTP clients, "
              f"{args.open:,} open tickets ({args.due_percent}% warning + {args.due_percent}% breach due)\n")
        header = f"{'measure':<46} {'value':>14} {'reference':>14} {'ratio':>7}  reference is"
        print(header)
        print("-" * len(header))
        if got is not None:
            print(f"{'ticket create + routing over HTTP (/s)':<46} {got:>14.1f} {ref:>14.1f} {got / ref:>7.2f}  "
                  f"authenticated GET /v1/ticket-workflows (/s)")
            print(f"{'  p99 latency (ms)':<46} {p99:>14.1f} {ref_p99:>14.1f} {p99 / ref_p99:>7.2f}")
        print(f"{'SLA-watch tick, first (s)':<46} {tick:>14.3f} {scan:>14.3f} {tick / scan:>7.2f}  "
              f"Python scan of all open tickets (s)")
        print(f"{'  warnings + escalations recorded':<46} {result['warnings'] + result['breaches']:>14,}")
        print(f"{'SLA-watch tick, nothing due (s)':<46} {idle:>14.3f} {scan:>14.3f} {idle / scan:>7.2f}")
        print(f"\ntarget: one tick over {args.open:,} open tickets <= 5 s: "
              f"{'met' if tick <= 5 else 'NOT met'} ({tick:.3f} s)")
    finally:
        close_database()
        cleanup()


if __name__ == "__main__":
    main()
