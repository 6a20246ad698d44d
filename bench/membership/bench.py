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
import multiprocessing as mp
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import PG, PY, ROOT, free_port, patron, psql  # noqa: E402
MEMBERS = 500
BATCH = 100
CART = {"items": [{"sku": "A", "price_fen": 10000, "quantity": 2, "category": "food"},
                  {"sku": "B", "price_fen": 5000}], "shipping_fen": 1000, "channel": "app"}


def seed(url):
    """The ledger's system accounts, created up front (as `patron demo` does) before concurrent load."""
    code = f"""
from app import create_app, policy
from app.db import db
from app.services.ledger import core as ledger_core
app = create_app({{"DATABASE_URL": {url!r}, "LOG_LEVEL": "WARNING"}})
with app.app_context(), db.connection_context():
    policy.startup(app)
    with db.atomic():
        ledger_core.ensure_system_accounts()
"""
    subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT,
                   env={**os.environ, "PATRON_LOG_LEVEL": "WARNING"})


class Server:
    def __init__(self, url, workers, threads):
        self.port = free_port()
        self.token = patron(url, "apikey", "create", "--name", "bench", "--scopes", "members:write").strip()
        env = {**os.environ, "PATRON_DATABASE_URL": url, "PATRON_LOG_LEVEL": "WARNING", "PATRON_TICKER": "false"}
        env.pop("PATRON_REDIS_URL", None)
        self.log = tempfile.NamedTemporaryFile(prefix="bench-members-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([PY, "-m", "app.cli", "serve", "--port", str(self.port), "--workers",
                                      str(workers), "--threads", str(threads)], env=env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {self.log.name}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


def _event(rnd, prefix, n, i=0):
    m = f"bm-{rnd.randint(1, MEMBERS)}"
    kind = rnd.random()
    ev = {"event_id": f"{prefix}-{n}-{i}", "member_id": m}
    if kind < 0.5:
        ev.update(type="order_paid", amount_fen=rnd.randint(100, 100000), order_ref=f"o-{prefix}-{n}-{i}",
                  channel="app")
    elif kind < 0.8:
        ev.update(type="sign_in")
    else:
        ev.update(type=rnd.choice(["share", "review_posted", "active_day"]))
    return ev


def _client(port, token, kind, seconds, seed, out):
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    prefix = secrets.token_hex(5)
    lat, done, errors, n = [], 0, 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
        t0 = time.perf_counter()
        if kind == "health":
            conn.request("GET", "/healthz")
            count = 1
        elif kind == "checkout":
            conn.request("POST", f"/v1/members/bm-{rnd.randint(1, MEMBERS)}/checkout-benefits",
                         body=json.dumps(CART), headers=headers)
            count = 1
        elif kind == "batch":
            conn.request("POST", "/v1/member-events/batch", headers=headers,
                         body=json.dumps({"events": [_event(rnd, prefix, n, i) for i in range(BATCH)]}))
            count = BATCH
        else:
            conn.request("POST", "/v1/member-events", body=json.dumps(_event(rnd, prefix, n)), headers=headers)
            count = 1
        resp = conn.getresponse()
        data = resp.read()
        lat.append(time.perf_counter() - t0)
        if resp.status >= 300:
            errors += 1
            if errors < 3:
                print(f"  {kind}: error {resp.status}: {data[:300]!r}", file=sys.stderr)
        elif kind == "batch":
            done += json.loads(data)["accepted"]
        else:
            done += count
    out.put((done, errors, lat))


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
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(port, token, kind, seconds, i * 7919 + time.time_ns(), q))
             for i in range(clients)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    lat = sorted(x for r in results for x in r[2])
    pct = lambda f: 1000 * lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")  # noqa: E731
    return sum(r[0] for r in results) / min(elapsed, seconds + 0.5), pct(0.5), pct(0.99), sum(r[1] for r in results)


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
    """One run in a fresh database: rows of (name, (rate, p50, p99, errors), reference rate, reference name)."""
    if args.backend == "sqlite":
        return once_sqlite(args)
    db = f"bench_membership_{os.getpid()}"
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(f"CREATE DATABASE {db}")
    url = f"{PG}/{db}"
    server = None
    try:
        patron(url, "db", "upgrade")
        seed(url)
        server = Server(url, args.workers, args.threads)
        warm_up(server)
        health = load(server.port, server.token, "health", args.clients, args.seconds)
        ref_tps, ref_lat = pgbench(db, args.clients, args.seconds)
        single = load(server.port, server.token, "single", args.clients, args.seconds)
        batch = load(server.port, server.token, "batch", args.clients, args.seconds)
        checkout = load(server.port, server.token, "checkout", args.clients, args.seconds)
    finally:
        if server:
            server.stop()
        if not args.keep:
            psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return [("GET /healthz (reference: HTTP stack)", health, None, None),
            ("pgbench event.sql (reference: storage shape)", (ref_tps, ref_lat, float("nan"), 0), None, None),
            ("POST /v1/member-events (events/s)", single, ref_tps, "pgbench"),
            (f"POST /v1/member-events/batch x{BATCH} (events/s)", batch, ref_tps, "pgbench"),
            ("POST checkout-benefits (req/s)", checkout, health[0], "healthz")]


def once_sqlite(args):
    """One run on a fresh SQLite file (no pgbench reference: event rows are compared with healthz)."""
    tmp = tempfile.mkdtemp(prefix="bench-members-")
    url = f"sqlite:///{tmp}/bench.db"
    server = None
    try:
        patron(url, "db", "upgrade")
        seed(url)
        server = Server(url, args.workers, args.threads)
        warm_up(server)
        health = load(server.port, server.token, "health", args.clients, args.seconds)
        single = load(server.port, server.token, "single", args.clients, args.seconds)
        batch = load(server.port, server.token, "batch", args.clients, args.seconds)
        checkout = load(server.port, server.token, "checkout", args.clients, args.seconds)
    finally:
        if server:
            server.stop()
        if not args.keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return [("GET /healthz (reference: HTTP stack)", health, None, None),
            ("POST /v1/member-events (events/s)", single, health[0], "healthz"),
            (f"POST /v1/member-events/batch x{BATCH} (events/s)", batch, health[0], "healthz"),
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
