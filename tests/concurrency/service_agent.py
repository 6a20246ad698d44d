"""One racing agent in its own process: go online, then take and finish users until the queue is empty.

Started through a ``forkserver`` that preloads this module, so each of the agents costs a fork, not a
fresh interpreter importing the whole application.
"""
import time

from app import create_app  # noqa: F401  (preloaded in the fork server)
from app.db import connection
from app.models.service import ServiceAgent
from app.services.service import desk  # noqa: F401


def run(url, staff_no, ready, go, results, reference=None):
    """Go online, report ready, wait for ``go``, take/close until three empty looks; put the outcome on ``results``.

    ``reference`` (benchmark): (rounds, statements, done queue, go2 event) — first time ``rounds`` bare
    transactions of ``statements`` trivial round trips on this agent's own row (the same load, no application
    work), report them on ``done``, then wait for ``go2`` before taking.
    """
    try:
        results.put(_run(url, staff_no, ready, go, reference))
    except Exception as exc:  # the parent asserts on it, with the reason
        ready.put(staff_no)
        results.put({"staff_no": staff_no, "error": f"{type(exc).__name__}: {exc}"})


def bare_round_trips(staff_no, rounds, statements):
    """Seconds of each bare transaction: BEGIN; UPDATE own agent row; (statements - 3) x SELECT 1; COMMIT."""
    from app.db import db, write_transaction
    from app.platform import sql as fastsql
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with write_transaction():
            fastsql.execute('UPDATE "service_agent" SET "updated_at" = "updated_at" WHERE "staff_no" = ?', (staff_no,))
            for _ in range(max(0, statements - 3)):
                db.execute_sql("SELECT 1").fetchone()
        times.append(time.perf_counter() - t0)
    return times


def _run(url, staff_no, ready, go, reference=None):
    app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING", "DB_MAX_CONNECTIONS": 4})
    served, violations, latencies = [], [], []
    with app.app_context():
        from app import policy
        with connection():
            policy.active()
            desk.go_online(staff_no)
        ready.put(staff_no)
        go.wait(300)
        if reference:
            rounds, statements, done, go2 = reference
            with connection():
                done.put(bare_round_trips(staff_no, rounds, statements))
            go2.wait(300)
        empty = 0
        while empty < 3:
            with connection():
                started = time.perf_counter()
                conv = desk.take(staff_no)
                latencies.append(time.perf_counter() - started)
                if conv is None:
                    empty += 1
                    time.sleep(0.05)
                    continue
                empty = 0
                serving = ServiceAgent.get(ServiceAgent.staff_no == staff_no).serving
                if serving != 1:
                    violations.append({"after_take": conv["id"], "serving": serving})
                served.append([conv["id"], conv["priority"], conv["queued_at"]])
                desk.close(staff_no, conv["id"], {"category": "咨询", "summary": "race"})
    return {"staff_no": staff_no, "served": served, "violations": violations, "take_seconds": latencies}


def start_agents(url, staff, timeout=300, reference=None):
    """Start one process per staff_no, wait until all are online; returns (go event, results queue, processes).

    ``reference`` = (rounds, statements): the processes first run bare transactions (see ``run``); the return
    value is then (go, results, procs, (done queue, go2 event)).
    """
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ref = (reference[0], reference[1], ctx.Queue(), ctx.Event()) if reference else None
    procs = [ctx.Process(target=run, args=(url, s, ready, go, results, ref), daemon=True) for s in staff]
    for p in procs:
        p.start()
    for _ in staff:
        ready.get(timeout=timeout)
    if ref:
        return go, results, procs, (ref[2], ref[3])
    return go, results, procs


def run_auto(url, staff_no, ready, go, results):
    """Auto-assignment racer: after ``go`` the agent goes online (which dispatches), then finishes whatever it is
    given (each close dispatches again), recording how many users it held at once; ``staff_no`` None is a bare
    dispatcher process calling ``desk.dispatch()`` until the queue is empty."""
    try:
        results.put(_run_auto(url, staff_no, ready, go))
    except Exception as exc:  # the parent asserts on it, with the reason
        ready.put(staff_no)
        results.put({"staff_no": staff_no, "error": f"{type(exc).__name__}: {exc}"})


def _run_auto(url, staff_no, ready, go):
    from app.models.service import ServiceConversation
    app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING", "DB_MAX_CONNECTIONS": 4})
    served, held, dispatched = [], [], 0
    with app.app_context():
        from app import policy
        with connection():
            policy.active()
        ready.put(staff_no)
        go.wait(300)
        if staff_no is not None:
            with connection():
                desk.go_online(staff_no)
        idle = 0
        while idle < 5:
            with connection():
                queued = ServiceConversation.select().where(ServiceConversation.state == "queued").count()
                if staff_no is None:
                    dispatched += desk.dispatch()
                    mine = []
                else:
                    mine = [c.id for c in ServiceConversation.select(ServiceConversation.id).where(
                        (ServiceConversation.agent == staff_no) & (ServiceConversation.state == "serving"))]
                    held.append(len(mine))
                    for cid in mine:
                        desk.close(staff_no, cid, {"category": "咨询", "summary": "auto race"})
                        served.append(cid)
            idle = idle + 1 if not mine and not queued else 0
            if not mine:
                time.sleep(0.02)
    return {"staff_no": staff_no, "served": served, "max_held": max(held, default=0), "dispatched": dispatched}


def start_auto(url, staff, dispatchers, timeout=300):
    """One process per agent plus ``dispatchers`` bare dispatcher processes; returns (go, results, processes)."""
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    who = list(staff) + [None] * dispatchers
    procs = [ctx.Process(target=run_auto, args=(url, s, ready, go, results), daemon=True) for s in who]
    for p in procs:
        p.start()
    for _ in who:
        ready.get(timeout=timeout)
    return go, results, procs
