"""Health of the periodic-job scheduler (RQ's cron loop in workers, the in-process ticker), for /readyz.

The loops record every failed and every good iteration; a failure newer than the last good iteration
means the scheduler is degraded. Workers write to Redis (the web processes read it there); the ticker
keeps it in this process.
"""
import time

from app.metrics import SCHEDULER_ERRORS

HEALTH_KEY = "patron:scheduler:{queue}"  # Redis hash per queue: ok_at, error_at, error (UNIX seconds)
HEALTH_TTL = 86400
_local = {}  # the in-process ticker's, same fields


def failed(loop, exc, conn=None, queue_name=None):
    """Count a failed iteration of ``loop`` (cron | ticker) and remember it (Redis when ``conn``)."""
    SCHEDULER_ERRORS.labels(loop).inc()
    fields = {"error_at": time.time(), "error": f"{type(exc).__name__}: {exc}"[:500]}
    if conn is None:
        _local.update(fields)
        return
    key = HEALTH_KEY.format(queue=queue_name)
    conn.hset(key, mapping=fields)
    conn.expire(key, HEALTH_TTL)


def ok(conn=None, queue_name=None):
    """Remember a good iteration."""
    if conn is None:
        _local["ok_at"] = time.time()
        return
    key = HEALTH_KEY.format(queue=queue_name)
    conn.hset(key, "ok_at", time.time())
    conn.expire(key, HEALTH_TTL)


def health(conn=None, queue_name=None):
    """The scheduler's last error when it is newer than its last good iteration, else None.

    Args:
        conn: Redis (the workers' cron loops write there); None for this process's ticker.
        queue_name: the queue whose cron loop to ask about.

    Returns:
        None, or {"error": "...", "error_at": UNIX seconds}.
    """
    if conn is None:
        data = dict(_local)
    else:
        raw = conn.hgetall(HEALTH_KEY.format(queue=queue_name)) or {}
        data = {k.decode(): v.decode() for k, v in raw.items()}
    error_at = float(data.get("error_at") or 0)
    if error_at and error_at >= float(data.get("ok_at") or 0):
        return {"error": data.get("error"), "error_at": error_at}
    return None
