"""Profile ticket creation in-process: SQL statements per create, ms per create, and (optionally) a cProfile.

Usage:
    .venv/bin/python bench/tickets/profile_create.py [--backend sqlite|postgres] [--creates 200] [--profile]

Runs the full request path (Flask test client: auth, schema validation, rules, write) without the
network. The reference measured in the same run is an authenticated GET /v1/ticket-workflows.
"""
import argparse
import cProfile
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import close_database, database, in_process_app, print_profile, statements_of  # noqa: E402

CATS = ["退款争议", "物流/配送", "发票", "投诉", "退换货", "商品质量", "账户/会员"]


def body(i):
    return {"category": CATS[i % len(CATS)], "title": f"问题 {i}", "body": "快递 投诉 发票"[i % 3:],
            "user_id": f"prof-u{i}", "amount_fen": (i * 7919) % 300000, "channel": "app",
            "user": {"level": ["注册", "金牌", "钻石"][i % 3], "paid": i % 5 == 0}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="print the top cProfile entries (stats also saved to patron-ticket-create.prof in the temp folder)")
    ap.add_argument("--sql", action="store_true", help="print the statements of one create")
    args = ap.parse_args()

    url, cleanup = database(args.backend)
    try:
        app, token = in_process_app(url)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}

        def create(i):
            r = client.post("/v1/tickets", json=body(i),
                            headers=dict(headers, **{"Idempotency-Key": f"prof-{uuid.uuid4().hex}"}))
            assert r.status_code == 201, r.get_data(as_text=True)

        for i in range(30):  # warm-up: rules compile, caches fill
            create(i)

        n = 70
        statements = statements_of(lambda: [create(1000 + i) for i in range(n)])
        per = len(statements) / n
        kinds = Counter(s.split()[0].upper() for s in statements)
        if args.sql:
            for s in statements_of(lambda: create(99_999)):
                print("  ", s[:160])

        t0 = time.perf_counter()
        for i in range(args.creates):
            client.get("/v1/ticket-workflows", headers=headers)
        ref = (time.perf_counter() - t0) * 1000 / args.creates

        prof = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        for i in range(args.creates):
            create(10_000 + i)
        if prof:
            prof.disable()
        ms = (time.perf_counter() - t0) * 1000 / args.creates

        print(f"\nTicket create in-process — backend {args.backend}, {args.creates} creates\n")
        header = f"{'measure':<36} {'value':>10} {'reference':>10} {'ratio':>7}  reference is"
        print(header)
        print("-" * len(header))
        print(f"{'ms per create (test client)':<36} {ms:>10.2f} {ref:>10.2f} {ms / ref:>7.2f}  "
              f"GET /v1/ticket-workflows (ms)")
        print(f"{'SQL statements per create':<36} {per:>10.1f}   " + ", ".join(f"{k} {v / n:.1f}"
                                                                            for k, v in kinds.most_common()))
        if prof:
            print_profile(prof, "patron-ticket-create.prof", cumulative=45, tottime=30)
    finally:
        close_database()
        cleanup()


if __name__ == "__main__":
    main()
