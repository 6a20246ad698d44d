"""Simulation benchmark: a synthetic year replayed against baseline and candidate; events/s, wall time, peak memory,
beside the live event path's rate (events.ingest on the default SQLite settings) measured in the same run.

Usage:  .venv/bin/python bench/simulation/bench.py [--members 100000] [--days 365] [--seed 1]
                                                   [--partitions 1] [--workers 2] [--live 500] [--runs 3]

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
import statistics
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


def candidate_folder(tmp):
    """The repository's policies with one change (铜牌's yearly deduction 200 -> 800): two different replays."""
    folder = os.path.join(tmp, "candidate")
    shutil.copytree(ROOT / "policies", os.path.join(folder, "policies"))
    shutil.copytree(ROOT / "rules", os.path.join(folder, "rules"))
    path = os.path.join(folder, "policies", "membership.yaml")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert "{铜牌: 200," in text
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text.replace("{铜牌: 200,", "{铜牌: 800,"))
    return folder


def one_run(args, path, n, head, end, tmp, candidate):
    """Live-path reference then the simulation, in the same run; returns the figures."""
    from app import create_app
    from app.services import simulation
    live_n, live_wall, live_cpu = live_rate(head, args.live)
    app = create_app({"DATABASE_URL": "sqlite:///" + os.path.join(tmp, "host.db"), "REDIS_URL": None,
                      "LOG_LEVEL": "WARNING"})
    mem = PeakMemory()
    mem.start()
    t0 = time.perf_counter()
    cpu0 = os.times()
    with app.app_context():
        rep, _ = simulation.simulate({"candidate": candidate, "baseline": str(ROOT), "events": path,
                                      "from": "2025-01-01", "to": end, "partitions": args.partitions,
                                      "workers": args.workers, "workdir": tmp})
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    mem.stop.set()
    mem.join()
    cpu = (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system) - (
        cpu0.user + cpu0.system + cpu0.children_user + cpu0.children_system)
    return {"wall": wall, "cpu": cpu, "peak_mb": mem.peak_kb / 1024, "live_rate": live_n / live_wall,
            "live_cpu_ms": live_cpu / live_n * 1000, "live_n": live_n, "load": os.getloadavg()[0],
            "members": rep["baseline"]["members"], "replayed": rep["baseline"]["events_replayed"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=100000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=1, help="member partitions (each replayed per policy set)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes at a time")
    ap.add_argument("--live", type=int, default=500, help="member events for the live-path reference")
    ap.add_argument("--runs", type=int, default=3, help="runs; the table shows each and the median")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    os.chdir(ROOT)
    from app.services.simulation import sources
    tmp = tempfile.mkdtemp(prefix="patron-bench-sim-")
    try:
        path = os.path.join(tmp, "history.jsonl")
        t0 = time.perf_counter()
        n = sources.generate(args.members, args.days, args.seed, start="2025-01-01", out=path)
        gen_s = time.perf_counter() - t0
        with open(path, encoding="utf-8") as fh:
            head = [json.loads(next(fh)) for _ in range(min(n, args.live * 2))]
        end = (dt.date(2025, 1, 1) + dt.timedelta(days=args.days)).isoformat()
        candidate = candidate_folder(tmp)
        print(f"generated {n:,} records ({args.members:,} members x {args.days} days) in {gen_s:.1f} s; "
              f"{args.runs} runs of: live path ({args.live} events, 1 process) then the simulation "
              f"(baseline = repository policies, candidate = 铜牌 deduction 800; {args.partitions} partitions, "
              f"{args.workers} workers)", flush=True)
        runs = []
        head_row = (f"{'run':>4} {'sim wall s':>10} {'events/s':>9} {'CPU s':>7} {'peak MB':>8} "
                    f"{'live ev/s':>9} {'live CPU ms':>11} {'sim/live':>9} {'load':>5}")
        print(head_row, flush=True)

        def row(label, r):
            rate = n / r["wall"]
            print(f"{label:>4} {r['wall']:>10.1f} {rate:>9,.0f} {r['cpu']:>7.1f} {r['peak_mb']:>8,.0f} "
                  f"{r['live_rate']:>9,.1f} {r['live_cpu_ms']:>11.2f} {rate / r['live_rate']:>8,.0f}x "
                  f"{r['load']:>5.1f}", flush=True)
        for k in range(args.runs):
            r = one_run(args, path, n, head, end, tmp, candidate)
            runs.append(r)
            row(str(k + 1), r)
        med = {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu", "peak_mb", "live_rate",
                                                                        "live_cpu_ms", "load")}
        row("med", med)
        print(f"\nevents/s = history records / simulation wall time (each record is replayed twice: baseline and "
              f"candidate; planning, workers and the merged report included). Targets for 1,000,000 records: "
              f"<= 60 s wall, <= 2,048 MB peak (all processes). sim/live = simulation events/s over the live "
              f"path's events/s. CPU s = this process and its workers. {runs[-1]['members']:,} members replayed; "
              f"load = 1-minute load average at the end of the run on {os.cpu_count()} CPUs.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
