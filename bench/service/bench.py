"""Service-desk benchmark: racing assignment and live fan-out, each beside a reference from the same run.

Usage:
    .venv/bin/python bench/service/bench.py [--backend postgres|sqlite] [--agents 16] [--users 1000]
        [--clients 200] [--messages 20] [--redis redis://127.0.0.1:6379/0 | --no-redis] [--assign-only]

1. Assignment: ``--agents`` agent processes (forked from a preloaded server) take and finish users from
   ``--users`` waiting users until the queue is empty. Prints assignments/s and p50/p99 of one take
   (the agent's guarded UPDATE, the queue head's UPDATE with SKIP LOCKED, one INSERT of decision + event,
   COMMIT) and the statements of one take, beside a reference from the same run: the same agent processes,
   just before the race, each run bare transactions with as many round trips (UPDATE own row + SELECT 1s),
   so the ratio shows what the application adds over the machine and the database at that concurrency.
2. Fan-out: ``--clients`` SSE clients follow one conversation through the real HTTP server; an agent
   posts ``--messages`` messages. Prints p50/p99 from just before the POST to each client's receipt,
   beside a bare pub/sub hop (Redis PUBLISH -> a subscriber) or, without Redis, an in-process hop.
"""
import argparse
import datetime as dt
import json
import os
import random
import selectors
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, database, in_process_app  # noqa: E402

sys.path.insert(0, str(ROOT))


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values))) - 1))] * 1000


def apply_variant(app, **changes):
    import yaml
    from app import policy
    from app.db import db
    with app.app_context(), db.connection_context():
        files = dict(policy.active().files)
        doc = yaml.safe_load(files["policies/service.yaml"])
        doc.update(changes)
        files["policies/service.yaml"] = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
        policy.apply(files, "bench")


def staff(app, n, prefix):
    from app.db import db
    from app.services.tickets.staff import create_staff
    out = []
    with app.app_context(), db.connection_context():
        for i in range(n):
            no = f"{prefix}-{i:03d}"
            create_staff({"staff_no": no, "name": no, "department": "cs", "roles": ["agent_l1"]})
            out.append(no)
    return out


def queue_users(app, n):
    from app import policy
    from app.db import db, write_transaction
    from app.models.service import ServiceConversation
    from app.platform import clock
    from app.services.service.desk import token_hash
    now = clock.now()
    rnd = random.Random(1)
    with app.app_context(), db.connection_context():
        rows = [{"user_id": f"bench-{i}", "group": "general", "channel": "app", "state": "queued",
                 "priority": rnd.choice([0, 0, 0, 40, 60]), "priority_rule": "bench",
                 "policy_version": policy.active_version(), "facts": "{}", "topic": "",
                 "queued_at": now - dt.timedelta(milliseconds=n - i), "user_seen_at": now,
                 "token_hash": token_hash(f"t{i}"), "last_seq": 0, "requeues": 0, "created_at": now}
                for i in range(n)]
        with write_transaction():
            for i in range(0, n, 200):
                ServiceConversation.insert_many(rows[i:i + 200]).execute()


def statements_of_one_take(app, staff_no):
    """The statements (BEGIN/COMMIT included) of one real take, counted on the wire; the user is then closed."""
    from common import counted_statements
    from app.db import connection
    from app.services.service import desk
    with app.app_context(), connection():
        desk.go_online(staff_no)
        desk._staff_name(staff_no)  # cached per process after an agent's first take, as in the racing processes
        with counted_statements() as statements:
            conv = desk.take(staff_no)
        assert conv is not None
        desk.close(staff_no, conv["id"], {"category": "咨询", "summary": "bench"})
    return statements


def bench_assignment(app, url, agents, users):
    """Same run, same agent processes: first bare transactions with as many round trips as a take (the
    reference: what the machine and database cost at this concurrency), then the race over the queue."""
    from tests.concurrency.service_agent import start_agents
    team = staff(app, agents, "B")
    queue_users(app, users + 1)
    statements = statements_of_one_take(app, team[0])
    rounds = max(20, users // agents)
    go, results_q, procs, (ref_done, go2) = start_agents(url, team, reference=(rounds, len(statements)))
    go.set()
    ref = [t for _ in team for t in ref_done.get(timeout=600)]
    t0 = time.perf_counter()
    go2.set()
    results = [results_q.get(timeout=600) for _ in team]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise SystemExit(f"agent failed: {errors[0]}")
    served = [c for r in results for c in r["served"]]
    ids = [c[0] for c in served]
    assert len(ids) == len(set(ids)) == users, "double or missing assignment"
    takes = [t for r in results for t, _ in zip(r["take_seconds"], r["served"])]
    return {"assignments_per_s": users / elapsed, "elapsed_s": elapsed, "p50_ms": pct(takes, 50),
            "p99_ms": pct(takes, 99), "ref_p50_ms": pct(ref, 50), "ref_p99_ms": pct(ref, 99),
            "statements": statements, "ref_rounds": rounds}


# --- fan-out ---------------------------------------------------------------------------------------

class Clients:
    """N raw-socket SSE clients read by one selector thread; records (seq -> [receipt times])."""

    def __init__(self, port, path, n):
        self.sel = selectors.DefaultSelector()
        self.received = {}
        self.lock = threading.Lock()
        self.buffers = {}
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.buffers[s] = b""
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop:
            for key, _ in self.sel.select(0.5):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                now = time.perf_counter()
                buf = self.buffers[s] + data
                *lines, self.buffers[s] = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        ev = json.loads(line[6:])
                        with self.lock:
                            self.received.setdefault(ev["seq"], []).append(now)

    def close(self):
        self.stop = True
        self.thread.join(2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def reference_hop(redis_url, n=200):
    """A bare pub/sub hop: PUBLISH a timestamp, one subscriber thread receives it."""
    times = []
    if redis_url:
        import redis
        r = redis.Redis.from_url(redis_url)
        ps = r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe("patron:bench:hop")
        time.sleep(0.2)
        for _ in range(n):
            t0 = time.perf_counter()
            r.publish("patron:bench:hop", str(t0))
            while True:
                m = ps.get_message(timeout=5)
                if m and m["type"] == "message":
                    break
            times.append(time.perf_counter() - t0)
            time.sleep(0.005)
        ps.close()
        return times
    ev, box = threading.Event(), []

    def waiter():
        while len(box) < n:
            ev.wait()
            ev.clear()
            box.append(time.perf_counter())
    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    for _ in range(n):
        t0 = time.perf_counter()
        ev.set()
        while len(box) < len(times) + 1:
            time.sleep(0)
        times.append(box[len(times)] - t0)
    return times


def bench_fanout(app, clients, messages, redis_url):
    import requests
    from werkzeug.serving import make_server

    from app.db import db
    from app.platform.auth import create_key
    with app.app_context(), db.connection_context():
        token, _ = create_key("bench-agent", ["service:write", "act-as"])
    app.config["REDIS_URL"] = redis_url
    team = staff(app, 1, "F")
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_port}"
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    hdr = {"Patron-Act-As": team[0]}

    def post(path, **kw):  # state-changing calls carry a fresh Idempotency-Key, as every client's must
        headers = {**kw.pop("headers", {}), "Idempotency-Key": uuid.uuid4().hex}
        return s.post(base + path, headers=headers, **kw)
    assert post("/v1/service/agent/online", json={}, headers=hdr).status_code == 200
    r = post("/v1/service/conversations", json={"user_id": "fanout-user"})
    conv_id, user_token = r.json()["conversation"]["id"], r.json()["user_token"]
    assert post("/v1/service/agent/take", headers=hdr).json()["conversation"]["id"] == conv_id
    after = s.get(f"{base}/v1/service/conversations/{conv_id}").json()["last_seq"]
    c = Clients(srv.server_port, f"/v1/service/conversations/{conv_id}/stream?token={user_token}&cursor={after}",
                clients)
    time.sleep(3)  # every client subscribed
    sent = {}
    for i in range(messages):
        t0 = time.perf_counter()
        ev = post(f"/v1/service/agent/conversations/{conv_id}/messages",
                  json={"type": "text", "text": f"广播 {i}"}, headers=hdr).json()
        sent[ev["seq"]] = t0
        time.sleep(0.25)
    time.sleep(2)
    c.close()
    srv.shutdown()
    lat = [t - sent[seq] for seq, ts in c.received.items() if seq in sent for t in ts]
    delivered = sum(len(ts) for seq, ts in c.received.items() if seq in sent)
    ref = reference_hop(redis_url)
    return {"deliveries": delivered, "expected": clients * messages, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "ref_p50_ms": pct(ref, 50), "ref_p99_ms": pct(ref, 99), "mode": "redis" if redis_url else "in-process"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--redis", default=os.environ.get("PATRON_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--assign-only", action="store_true", help="skip the fan-out part")
    args = ap.parse_args()
    url, cleanup = database(args.backend)
    try:
        app, _ = in_process_app(url)
        apply_variant(app, calendar="always", assignment="pull", user_timeout_seconds=3600,
                      agent_timeout_seconds=3600, heartbeat_seconds=30,
                      groups={**__import__("yaml").safe_load(open(ROOT / "policies/service.yaml", encoding="utf-8"))["groups"],
                              "general": {"name": "在线客服", "department": "cs", "roles": ["agent_l1", "agent_l2"],
                                          "queue_cap": args.users * 2}})
        a = bench_assignment(app, url, args.agents, args.users)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; backend {args.backend}")
        print(f"assignment  {args.agents} agent processes over {args.users} waiting users: "
              f"{a['assignments_per_s']:.0f} assignments/s ({a['elapsed_s']:.1f} s, each with a close)")
        print(f"  one take = {len(a['statements'])} round trips: " + " | ".join(
            " ".join(x.split()[:3]) for x in a["statements"]))
        print(f"  take latency      p50 {a['p50_ms']:7.1f} ms   p99 {a['p99_ms']:7.1f} ms   (target p99 < 100 ms)")
        print(f"  reference: {args.agents} processes x {a['ref_rounds']} bare transactions of "
              f"{len(a['statements'])} round trips (UPDATE own agent row + SELECT 1s)   "
              f"p50 {a['ref_p50_ms']:7.1f} ms   p99 {a['ref_p99_ms']:7.1f} ms")
        print(f"  ratio take/reference   p50 {a['p50_ms'] / a['ref_p50_ms']:.1f}x   "
              f"p99 {a['p99_ms'] / a['ref_p99_ms']:.1f}x")
        if args.assign_only:
            return
        f = bench_fanout(app, args.clients, args.messages, None if args.no_redis else args.redis)
        print(f"fan-out     {args.clients} SSE clients x {args.messages} messages ({f['mode']}): "
              f"{f['deliveries']}/{f['expected']} delivered")
        print(f"  POST -> client    p50 {f['p50_ms']:7.1f} ms   p99 {f['p99_ms']:7.1f} ms   (target p99 < 200 ms)")
        print(f"  reference (bare {'Redis PUBLISH -> subscriber' if f['mode'] == 'redis' else 'thread wake-up'})"
              f"  p50 {f['ref_p50_ms']:5.2f} ms   p99 {f['ref_p99_ms']:5.2f} ms")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
