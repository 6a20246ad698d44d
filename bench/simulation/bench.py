"""Simulation benchmark: a synthetic year replayed against baseline and candidate; records/s, wall time, peak memory,
beside the live event path's rate (events.ingest on the default SQLite settings) measured in the same run.

Usage:  .venv/bin/python bench/simulation/bench.py [--members 100000] [--days 365] [--seed 1]
                                                   [--partitions 1] [--workers 2] [--live 2000]

The SPEC target is 1,000,000 member events for 100,000 members over a simulated year in <= 60 s and <= 2 GB.
`--members 100000 --days 365` generates about that many records (see docs/simulation.md for the distributions).
Peak memory is the largest sum of resident memory over this process and its worker processes, sampled every 0.2 s.
"""
import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT  # noqa: E402


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _tree(pid):
    """pid and every descendant (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class PeakMemory(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in _tree(os.getpid())))
            self.stop.wait(0.2)


def live_rate(records, limit):
    """events.ingest (the live path, default database settings) over the first ``limit`` member events, in-process."""
    from app import create_app, policy
    from app.db import db
    from app.migrations import upgrade
    from app.platform import clock
    from app.services.ledger import core as ledger_core
    from app.services.membership import events
    tmp = tempfile.mkdtemp(prefix="patron-bench-live-")
    try:
        app = create_app({"DATABASE_URL": "sqlite:///" + os.path.join(tmp, "live.db"), "REDIS_URL": None,
                          "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade()
            policy.startup(app)
            with db.connection_context():
                with db.atomic():
                    ledger_core.ensure_system_accounts()
                batch = [r for r in records if r["type"] not in ("points_redeemed", "plan_subscribed",
                                                                   "plan_cancelled", "ticket_created")][:limit]
                t0, c0 = time.perf_counter(), time.process_time()
                for r in batch:
                    clock.set_now(dt.datetime.fromisoformat(r["occurred_at"].replace("Z", "")))
                    events.ingest(r, "bench")
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                clock.set_now(None)
        return len(batch), wall, cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=100000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--live", type=int, default=2000, help="member events for the live-path reference")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    os.chdir(ROOT)
    from app import create_app
    from app.services import simulation
    from app.services.simulation import sources
    tmp = tempfile.mkdtemp(prefix="patron-bench-sim-")
    try:
        path = os.path.join(tmp, "history.jsonl")
        t0 = time.perf_counter()
        n = sources.generate(args.members, args.days, args.seed, start="2025-01-01", out=path)
        gen_s = time.perf_counter() - t0
        with open(path, encoding="utf-8") as fh:
            head = [json.loads(next(fh)) for _ in range(min(n, args.live * 2))]
        live_n, live_wall, live_cpu = live_rate(head, args.live)
        print(f"generated {n:,} records in {gen_s:.1f} s; live path {live_n / live_wall:,.0f} events/s "
              f"({live_n} events, {live_cpu / live_n * 1000:.2f} CPU ms each); simulating...", flush=True)
        end = (dt.date(2025, 1, 1) + dt.timedelta(days=args.days)).isoformat()
        app = create_app({"DATABASE_URL": "sqlite:///" + os.path.join(tmp, "host.db"), "REDIS_URL": None,
                          "LOG_LEVEL": "WARNING"})
        mem = PeakMemory()
        mem.start()
        t0 = time.perf_counter()
        cpu0 = os.times()
        with app.app_context():
            rep, _ = simulation.simulate({"candidate": str(ROOT), "baseline": str(ROOT), "events": path,
                                          "from": "2025-01-01", "to": end, "partitions": args.partitions,
                                          "workers": args.workers})
        wall = time.perf_counter() - t0
        cpu1 = os.times()
        mem.stop.set()
        mem.join()
        child_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
        replayed = 2 * n
        rows = [
            ("records (members x days)", f"{n:,} ({args.members:,} x {args.days})", ""),
            ("generate", f"{gen_s:.1f} s", ""),
            ("simulation wall (baseline + candidate)", f"{wall:.1f} s", "target <= 60 s for 1,000,000"),
            ("simulation records/s (both replays)", f"{replayed / wall:,.0f}", ""),
            ("simulation CPU s per 1,000 records", f"{child_cpu / replayed * 1000:.2f}", ""),
            ("peak memory (all processes)", f"{mem.peak_kb / 1024:,.0f} MB", "target <= 2,048 MB"),
            ("live path events/s (ingest, 1 process)", f"{live_n / live_wall:,.0f}", f"{live_n} events"),
            ("live path CPU s per 1,000 events", f"{live_cpu / live_n * 1000:.2f}", ""),
            ("simulation / live rate (per process)", f"{(replayed / wall) / max(1, min(args.workers, 2)) / (live_n / live_wall):.2f}x", ""),
        ]
        w = max(len(r[0]) for r in rows) + 2
        print(f"{'measure':<{w}}{'value':>22}  note")
        for label, value, note in rows:
            print(f"{label:<{w}}{value:>22}  {note}")
        print(f"\nbaseline: {rep['baseline']['members']:,} members, growth earned {rep['baseline']['growth']['earned']:,}, "
              f"points issued {rep['baseline']['points']['issued']:,}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
