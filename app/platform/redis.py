"""Redis clients: one connection pool per URL per process, every call with a timeout."""
import os
import threading

_clients = {}
_lock = threading.Lock()


def connection(url):
    """The process's Redis client for ``url`` (created on first use; a forked child makes its own)."""
    import redis
    if not url:
        raise RuntimeError("PATRON_REDIS_URL is not set")
    with _lock:
        conn = _clients.get((url, os.getpid()))
        if conn is None:
            conn = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30)
            _clients[(url, os.getpid())] = conn
        return conn
