"""Web workspace benchmark: server time of every page on the demo data, beside a same-run reference.

Usage:
    .venv/bin/python bench/web/pages.py [--backend sqlite|postgres] [--rounds 30]

The demo data of `make run` is seeded into a throwaway database; an agent of the demo is online and serving a
user (so the agent page shows a conversation, its customer view and suggestions). Each page is requested in
process through the WSGI app with a signed-in session (no network: the time is the server's), ``--rounds``
times after a first call (reported apart: it compiles templates and fills caches, e.g. the parsed policy
versions of the diff page). The reference is the cheapest authenticated call there is, ``GET /v1/auth/me`` with
the same session cookie, measured in the same run. Target (SPEC §4): every page <= 300 ms.
"""
import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, database, in_process_app  # noqa: E402

sys.path.insert(0, str(ROOT))

TARGET_MS = 300
PASSWORD = "Bench-Password-7"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values))) - 1))] * 1000


def setup():
    from app import demo
    from app.services import identity
    from app.services.service import desk
    demo.seed()
    for staff_no in ("S-cs-1", "S-cs-sup", "S-admin"):
        identity.set_password("bench", staff_no, PASSWORD)
    _, out = desk.request_service({"user_id": "demo-user", "topic": "订单还没发货", "channel": "web"})
    desk.go_online("S-cs-1")
    conv = out["conversation"]["id"]
    if desk.view(conv)["state"] == "bot":  # the demo's bot answers first: ask for a person
        desk.user_message(conv, {"user_id": "demo-user", "message": {"type": "text", "text": "转人工"}})
    desk.user_message(conv, {"user_id": "demo-user", "message": {"type": "text", "text": "我要退款，订单还没发货"}})
    from app.services.service import connectors
    order_no = connectors.lookup("list_orders", "demo-user", 10)[0]["order_no"]
    return conv, out["user_token"], order_no


def sign_in(client, staff_no):
    page = client.get("/web/login").get_data(as_text=True)
    token = re.search(r'name="login_csrf" value="([^"]+)"', page).group(1)
    r = client.post("/web/login", data={"staff_no": staff_no, "password": PASSWORD, "login_csrf": token,
                                        "next": "/web/"})
    assert r.status_code == 303, r.get_data(as_text=True)[:300]


def timed(client, method, path, rounds, **kw):
    call = getattr(client, method)
    t0 = time.perf_counter()
    r = call(path, **kw)  # the first call (templates compiled, caches filled) is reported apart
    first = time.perf_counter() - t0
    assert r.status_code in (200, 204), f"{path}: {r.status_code} {r.get_data(as_text=True)[:300]}"
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = call(path, **kw)
        out.append(time.perf_counter() - t0)
        assert r.status_code in (200, 204), f"{path}: {r.status_code}"
    return first, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    url, cleanup = database(args.backend)
    try:
        holder = {}
        app, _ = in_process_app(url, lambda: holder.update(conv=setup()))
        conv, user_token, order_no = holder["conv"]
        agent, sup, admin = app.test_client(), app.test_client(), app.test_client()
        sign_in(agent, "S-cs-1")
        sign_in(sup, "S-cs-sup")
        sign_in(admin, "S-admin")
        user = app.test_client()
        assert user.get(f"/web/chat/{conv}/enter?token={user_token}").status_code == 303
        rows = [("reference: GET /v1/auth/me", *timed(agent, "get", "/v1/auth/me", args.rounds))]
        pages = [
            (agent, "/web/login"), (agent, "/web/"), (agent, "/web/agent"), (agent, "/web/agent/panel"),
            (agent, "/web/agent/conversation"), (agent, f"/web/agent/customers/demo-user?conv={conv}"),
            (agent, f"/web/agent/orders?order_no={order_no}&conv={conv}"), (agent, "/web/agent/knowledge?q=退款"),
            (agent, f"/web/agent/knowledge/suggestions?conv={conv}"), (user, f"/web/chat/{conv}"),
            (sup, "/web/approvals"), (sup, "/web/floor"), (sup, "/web/stats"), (sup, "/web/qa"), (sup, "/web/rosters"), (admin, "/web/policies"), (admin, "/web/policies/diff?a=active&b=disk"),
            (admin, "/web/policies/edit?file=policies/service.yaml"), (admin, "/web/simulations"),
        ]
        for client, path in pages:
            rows.append((f"GET {path}", *timed(client, "get", path, args.rounds)))
        csrf = admin.get_cookie("patron_csrf").value
        # actions, not pages: a full policy check compiles and runs every embedded example
        rows.append(("POST /web/policies/check (action)",
                     *timed(admin, "post", "/web/policies/check", max(3, args.rounds // 10),
                           data={"source": "disk", "csrf_token": csrf})))
        ref = statistics.median(rows[0][2]) * 1000
        print(f"web pages, {args.backend}, demo data, {args.rounds} rounds each (server time, in process)")
        print(f"{'request':<58} {'first':>7} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'x ref':>6}  target")
        worst = 0.0
        for name, first, values in rows:
            p50, p95, mx = pct(values, 50), pct(values, 95), max(values) * 1000
            verdict = "" if name.startswith("reference") else ("ok" if p95 <= TARGET_MS else "SLOW")
            if not name.startswith("reference") and "(action)" not in name:
                worst = max(worst, p95)
            print(f"{name[:58]:<58} {first * 1000:7.1f} {p50:7.1f} {p95:7.1f} {mx:7.1f} {p50 / ref:6.1f}  {verdict}")
        print(f"slowest page p95: {worst:.1f} ms (target <= {TARGET_MS} ms): {'ok' if worst <= TARGET_MS else 'SLOW'}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
