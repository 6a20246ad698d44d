"""Membership benchmark over HTTP: member events/s (single and batch) and checkout-benefits req/s with p99.

Usage:  .venv/bin/python bench/membership/bench.py [--backend postgres|sqlite] [--runs 3] [--seconds 5] [--clients 4]

Creates a fresh database (PostgreSQL ``bench_membership_<pid>``, or a SQLite file in a temporary
directory), migrates it, starts ``patron serve`` (gunicorn) on it and drives it from client processes.
References measured in the same run: pgbench running the storage shape of one event
(bench/membership/event.sql) for the event rows (PostgreSQL only), and ``GET /healthz`` (the bare HTTP
stack: auth-free Flask + gunicorn) for the request-rate rows. Prints one table with ratios.
See also bench/membership/profile_event.py (statements and in-process ms per request).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import PG, ROOT, Server, http_load, in_app_process, patron, percentile_ms, psql  # noqa: E402
MEMBERS = 500
BATCH = 100
CART = {"items": [{"sku": "A", "price_fen": 10000, "quantity": 2, "category": "food"},
                  {"sku": "B", "price_fen": 5000}], "shipping_fen": 1000, "channel": "app"}


def seed(url):
    """The ledger's system accounts, created up front (as `patron demo` does) before concurrent load."""
    in_app_process(url, """
        from app.services.ledger import core as ledger_core
        with db.atomic():
            ledger_core.ensure_system_accounts()
    """)


def member_event(rnd, event_id, member_id):
    """A random member event of the mix the benches send: half orders paid, sign-ins, a few others."""
    ev = {"event_id": event_id, "member_id": member_id}
    kind = rnd.random()
    if kind < 0.5:
        ev.update(type="order_paid", amount_fen=rnd.randint(100, 100000), order_ref=f"o-{event_id}", channel="app")
    elif kind < 0.8:
        ev.update(type="sign_in")
    else:
        ev.update(type=rnd.choice(["share", "review_posted", "active_day"]))
    return ev


def _event(rnd, prefix, n, i=0):
    return member_event(rnd, f"{prefix}-{n}-{i}", f"bm-{rnd.randint(1, MEMBERS)}")


def _request(kind):
    """Request n of a client: GET /healthz, a checkout, a batch of events or a single event."""
    def request(rnd, prefix, index, n):
        if kind == "health":
            return "GET", "/healthz", None, {}, 1
        if kind == "checkout":
            return "POST", f"/v1/members/bm-{rnd.randint(1, MEMBERS)}/checkout-benefits", CART, {}, 1
        if kind == "batch":
            return ("POST", "/v1/member-events/batch", {"events": [_event(rnd, prefix, n, i) for i in range(BATCH)]},
                    {}, lambda answer: answer["accepted"])
        return "POST", "/v1/member-events", _event(rnd, prefix, n), {}, 1
    return request


def warm_up(server):
    """Every member exists (member row, ledger accounts) before anything is measured."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    for lo in range(1, MEMBERS + 1, BATCH):
        evs = [{"event_id": f"warm-{m}", "member_id": f"bm-{m}", "type": "order_paid", "amount_fen": 10000,
                "order_ref": f"warm-{m}"} for m in range(lo, min(MEMBERS, lo + BATCH - 1) + 1)]
        conn.request("POST", "/v1/member-events/batch", body=json.dumps({"events": evs}), headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"warm-up failed: {resp.status} {body[:300]!r}")


def load(port, token, kind, clients, seconds):
    """(events or requests per s, p50 ms, p99 ms, errors) of `clients` processes sending `kind` for `seconds`."""
    rate, lat, errors = http_load(port, token, clients, seconds, _request(kind))
    return rate, percentile_ms(lat, 0.5), percentile_ms(lat, 0.99), errors


def pgbench(db, clients, seconds):
    out = subprocess.run(["pgbench", "-n", "-f", str(ROOT / "bench/membership/event.sql"), "-c", str(clients),
                          "-j", str(min(clients, 2)), "-T", str(max(1, int(seconds))), "-D", f"nmem={MEMBERS}",
                          f"{PG}/{db}"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr + out.stdout)
    tps = float(re.search(r"tps = ([\d.]+) \((?:without initial connection time|excluding)", out.stdout).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))
    return tps, lat


def once(args):
    """One run in a fresh database: rows of (name, (rate, p50, p99, errors), reference rate, reference name).

    References of the same run: pgbench running event.sql for the event rows on PostgreSQL (GET /healthz on
    SQLite, which has no pgbench), and GET /healthz for the checkout rows.
    """
    postgres = args.backend == "postgres"
    if postgres:
        db = f"bench_membership_{os.getpid()}"
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        psql(f"CREATE DATABASE {db}")
        url = f"{PG}/{db}"
    else:
        tmp = tempfile.mkdtemp(prefix="bench-members-")
        url = f"sqlite:///{tmp}/bench.db"
    server = None
    try:
        patron(url, "db", "upgrade")
        seed(url)
        server = Server(url, args.workers, args.threads, "members:write")
        warm_up(server)
        health = load(server.port, server.token, "health", args.clients, args.seconds)
        ref_tps, ref_lat = pgbench(db, args.clients, args.seconds) if postgres else (None, None)
        single = load(server.port, server.token, "single", args.clients, args.seconds)
        batch = load(server.port, server.token, "batch", args.clients, args.seconds)
        checkout = load(server.port, server.token, "checkout", args.clients, args.seconds)
    finally:
        if server:
            server.stop()
        if args.keep:
            pass
        elif postgres:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    events_ref = (ref_tps, "pgbench") if postgres else (health[0], "healthz")
    rows = [("GET /healthz (reference: HTTP stack)", health, None, None)]
    if postgres:
        rows.append(("pgbench event.sql (reference: storage shape)", (ref_tps, ref_lat, float("nan"), 0), None, None))
    return rows + [("POST /v1/member-events (events/s)", single, *events_ref),
                   (f"POST /v1/member-events/batch x{BATCH} (events/s)", batch, *events_ref),
                   ("POST checkout-benefits (req/s)", checkout, health[0], "healthz")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1, help="median of this many runs")
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    args = ap.parse_args()
    runs = [once(args) for _ in range(args.runs)]
    load_avg = os.getloadavg()[0]
    print(f"\nmembership bench: {args.backend}, {args.clients} clients, {args.seconds:.0f} s each, median of "
          f"{args.runs} run(s), gunicorn {args.workers} workers x {args.threads} threads, {MEMBERS} members, "
          f"{os.cpu_count()} cores, load average {load_avg:.1f}")
    print(f"{'what':52} {'rate/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  ratio (same run)")
    for i, (name, _, _, refname) in enumerate(runs[0]):
        med = lambda k: statistics.median(r[i][1][k] for r in runs)  # noqa: E731
        ratios = [r[i][1][0] / r[i][2] for r in runs if r[i][2]]
        ratio = f"{statistics.median(ratios):.2f}x {refname}" if ratios else ""
        print(f"{name:52} {med(0):9.0f} {med(1):8.1f} {med(2):8.1f} {int(sum(r[i][1][3] for r in runs)):6d}  {ratio}")


if __name__ == "__main__":
    main()
