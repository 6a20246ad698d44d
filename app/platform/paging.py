"""Keyset pagination: the one way a list pages (a cursor on unique keys, so no row is skipped or repeated)."""
import base64
import datetime as dt
import json

from app.errors import validation_failed


def bad_cursor():
    """422 for a ``cursor`` this list never gave (malformed, or of another list)."""
    return validation_failed([{"pointer": "/query/cursor", "validator": "format",
                               "message": "pass back the next_cursor of the previous page"}])


def encode(values):
    """An opaque cursor for a composite key (datetimes kept to the microsecond)."""
    plain = [{"t": v.isoformat()} if isinstance(v, dt.datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor, size):
    """The key values of a cursor from ``encode`` (exactly ``size`` of them), or a 422."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        if not isinstance(raw, list) or len(raw) != size:
            raise ValueError(cursor)
        out = []
        for v in raw:
            if isinstance(v, dict):
                v = dt.datetime.fromisoformat(v["t"])
                if v.tzinfo is not None:  # the keys are naive UTC; a cursor we made never has an offset
                    raise ValueError(cursor)
            elif (isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, int) and abs(v) >= 2**63)
                  or (isinstance(v, str) and not v.isprintable())):  # no NUL or lone surrogate reaches SQL
                raise ValueError(cursor)
            out.append(v)
        return out
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise bad_cursor() from None


def beyond(keys, values, desc=True):
    """The rows strictly past ``values`` in the order of ``keys`` (descending or ascending on all of them)."""
    cond = None
    for i in range(len(keys) - 1, -1, -1):
        step = keys[i] < values[i] if desc else keys[i] > values[i]
        cond = step if cond is None else (step | ((keys[i] == values[i]) & cond))
    return cond


def keyset(query, keys, cursor=None, limit=50, desc=True):
    """One page of ``query`` ordered by ``keys`` (unique together; newest first unless ``desc=False``).

    Args:
        query: a peewee select, filtered but not yet ordered or limited (``.dicts()`` rows too).
        keys: one field, or a tuple of fields unique together, e.g. ``(Model.created_at, Model.id)``.
        cursor: the ``next_cursor`` of the previous page: the key itself for one field, an opaque string
            from ``encode`` for several.
        limit: the page size.
        desc: newest (largest key) first.

    Returns:
        (rows of this page, next_cursor or None on the last page).
    """
    keys = tuple(keys) if isinstance(keys, (tuple, list)) else (keys,)
    q = query.order_by(*[k.desc() if desc else k.asc() for k in keys]).limit(limit + 1)
    if cursor is not None:
        values = [cursor] if len(keys) == 1 else decode(cursor, len(keys))
        q = q.where(beyond(keys, values, desc))
    rows = list(q)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    row = rows[-1]
    last = [row[k.name] if isinstance(row, dict) else row.__data__.get(k.name) for k in keys]
    return rows, last[0] if len(keys) == 1 else encode(last)
