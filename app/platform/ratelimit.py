"""Rate limits: an in-process token bucket per (limit, caller) for endpoints that cost real CPU."""
import math
import threading
import time

from app.errors import Problem

_lock = threading.Lock()
_buckets = {}  # (name, caller) -> [tokens, last refill (monotonic)]
MAX_BUCKETS = 10_000


def take(name, caller, per_minute, burst):
    """Spend one token of ``caller``'s bucket for ``name``, or raise 429 ``rate-limited`` with Retry-After.

    Buckets live in this process: with N server processes a caller may get up to N times the rate
    (put a shared limiter in front, e.g. the proxy, when that matters).

    Args:
        name: which limit, e.g. ``policy``.
        caller: who is limited, e.g. the API key id.
        per_minute: refill rate.
        burst: bucket size (requests allowed at once).
    """
    now = time.monotonic()
    rate = per_minute / 60.0
    with _lock:
        bucket = _buckets.get((name, caller))
        if bucket is None:
            if len(_buckets) >= MAX_BUCKETS:
                _buckets.clear()  # forgetting is safe: a fresh bucket is full, as after a restart
            bucket = _buckets[(name, caller)] = [float(burst), now]
        bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return
        wait = math.ceil((1.0 - bucket[0]) / rate)
    raise Problem(429, "rate-limited", "Too many requests",
                  f"at most {burst} requests at once and {per_minute} a minute per API key; retry in {wait} s",
                  retry_after=wait)


def reset():
    """Forget every bucket (tests)."""
    with _lock:
        _buckets.clear()
