"""One racing agent in its own process: go online, then take and finish users until the queue is empty.

Started through a ``forkserver`` that preloads this module, so each of the agents costs a fork, not a
fresh interpreter importing the whole application.
"""
import time

from app import create_app  # noqa: F401  (preloaded in the fork server)
from app.db import connection
from app.models.service import ServiceAgent
from app.services.service import desk  # noqa: F401


def run(url, staff_no, ready, go, results):
    """Go online, report ready, wait for ``go``, take/close until three empty looks; put the outcome on ``results``."""
    try:
        results.put(_run(url, staff_no, ready, go))
    except Exception as exc:  # the parent asserts on it, with the reason
        ready.put(staff_no)
        results.put({"staff_no": staff_no, "error": f"{type(exc).__name__}: {exc}"})


def _run(url, staff_no, ready, go):
    app = create_app({"DATABASE_URL": url, "REDIS_URL": None, "LOG_LEVEL": "WARNING", "DB_MAX_CONNECTIONS": 4})
    served, violations, latencies = [], [], []
    with app.app_context():
        from app import policy
        with connection():
            policy.active()
            desk.go_online(staff_no)
        ready.put(staff_no)
        go.wait(300)
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


def start_agents(url, staff, timeout=300):
    """Start one process per staff_no, wait until all are online; returns (go event, results queue, processes)."""
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=run, args=(url, s, ready, go, results), daemon=True) for s in staff]
    for p in procs:
        p.start()
    for _ in staff:
        ready.get(timeout=timeout)
    return go, results, procs
