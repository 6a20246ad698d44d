"""Profile member events and checkout-benefits in-process: SQL statements and ms per request, optional cProfile.

Usage:
    .venv/bin/python bench/membership/profile_event.py [--backend sqlite|postgres] [--n 200] [--profile] [--sql]

Runs the full request path (Flask test client: auth, schema validation, rules, writes, ledger) without
the network. The reference measured in the same run is an authenticated GET /v1/members/{id}.
"""
import argparse
import cProfile
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import close_database, database, in_process_app, print_profile, statements_of  # noqa: E402
from membership.bench import member_event  # noqa: E402

MEMBERS = 50
CART = {"items": [{"sku": "A", "price_fen": 10000, "quantity": 2, "category": "food"},
                  {"sku": "B", "price_fen": 5000}], "shipping_fen": 1000, "channel": "app"}


def event(rnd):
    return member_event(rnd, f"pf-{uuid.uuid4().hex}", f"pf-{rnd.randint(1, MEMBERS)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sql", action="store_true", help="print the statements of one order_paid event")
    args = ap.parse_args()

    from app.db import db
    from app.services.ledger import core as ledger_core

    def system_accounts():  # created up front, as `patron demo` does
        with db.atomic():
            ledger_core.ensure_system_accounts()

    url, cleanup = database(args.backend)
    try:
        app, token = in_process_app(url, setup=system_accounts)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        rnd = random.Random(7)

        def post(i):
            r = client.post("/v1/member-events", json=event(rnd), headers=headers)
            assert r.status_code == 201, r.get_data(as_text=True)

        def checkout(i):
            r = client.post(f"/v1/members/pf-{i % MEMBERS + 1}/checkout-benefits", json=CART, headers=headers)
            assert r.status_code == 200, r.get_data(as_text=True)

        for m in range(1, MEMBERS + 1):  # every member and its ledger accounts exist
            r = client.post("/v1/member-events", headers=headers,
                            json={"event_id": f"warm-{m}-{uuid.uuid4().hex}", "member_id": f"pf-{m}",
                                  "type": "order_paid", "amount_fen": 10000, "order_ref": f"w-{uuid.uuid4().hex}"})
            assert r.status_code == 201, r.get_data(as_text=True)

        n = 100
        ev_sql = statements_of(lambda: [post(i) for i in range(n)])
        co_sql = statements_of(lambda: [checkout(i) for i in range(n)])
        if args.sql:
            one = statements_of(lambda: client.post("/v1/member-events", headers=headers, json={
                "event_id": f"sql-{uuid.uuid4().hex}", "member_id": "pf-1", "type": "order_paid",
                "amount_fen": 12345, "order_ref": f"sql-{uuid.uuid4().hex}", "channel": "app"}))
            print("statements of one order_paid event:")
            for s in one:
                print("  ", " ".join(s.split())[:170])

        def timed(fn, count):
            t0 = time.perf_counter()
            for i in range(count):
                fn(i)
            return (time.perf_counter() - t0) * 1000 / count

        ref = timed(lambda i: client.get(f"/v1/members/pf-{i % MEMBERS + 1}", headers=headers), args.n)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        ev_ms = timed(post, args.n)
        co_ms = timed(checkout, args.n)
        if prof:
            prof.disable()

        print(f"\nMember events in-process — backend {args.backend}, {args.n} requests each\n")
        header = f"{'measure':<38} {'value':>8} {'reference':>10} {'ratio':>7}  detail"
        print(header)
        print("-" * len(header))
        for name, ms, sql in (("POST /v1/member-events", ev_ms, ev_sql), ("POST checkout-benefits", co_ms, co_sql)):
            kinds = Counter(s.split()[0].upper() for s in sql)
            print(f"{name + ' (ms)':<38} {ms:>8.2f} {ref:>10.2f} {ms / ref:>7.2f}  reference: GET /v1/members/{{id}} ms")
            print(f"{name + ' (SQL statements)':<38} {len(sql) / n:>8.1f} {'':>10} {'':>7}  "
                  + ", ".join(f"{k} {v / n:.1f}" for k, v in kinds.most_common()))
        if prof:
            print_profile(prof, "patron-member-event.prof")
    finally:
        close_database()
        cleanup()


if __name__ == "__main__":
    main()
