"""Controllable clock: ``now()`` is UTC (naive); tests and replays move it with ``set_now``."""
import datetime as dt
import threading

_lock = threading.Lock()
_override = None


def now():
    """The current instant, naive UTC (or the instant set by ``set_now``)."""
    current = _override
    if current is not None:
        return current
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def set_now(instant):
    """Freeze the clock at ``instant`` (naive UTC or aware); ``None`` resumes real time."""
    global _override
    with _lock:
        if instant is not None and instant.tzinfo is not None:
            instant = instant.astimezone(dt.timezone.utc).replace(tzinfo=None)
        _override = instant
