"""The one wire format for instants: RFC 3339 in UTC with ``Z`` (``2026-01-31T04:00:00Z``), and its parser."""
import datetime as dt

from app.errors import Problem


def iso(value):
    """Naive UTC (or aware, or ISO text) -> ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"



# Zone conversions by arithmetic from the epoch: datetime.replace costs more than the conversion itself, and
# the membership replay and the SLA calendar convert millions of instants.
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.timezone.utc)


def in_zone(utc_naive, tz):
    """A naive UTC instant as an aware time in ``tz`` (an aware one is read as UTC wall time, as before)."""
    if utc_naive.tzinfo is None:
        return (_EPOCH_UTC + (utc_naive - _EPOCH)).astimezone(tz)
    return utc_naive.replace(tzinfo=dt.timezone.utc).astimezone(tz)


def naive_utc(aware):
    """An aware time as naive UTC (a naive one is read as the system's local time, as ``astimezone`` does)."""
    if aware.tzinfo is not None:
        return _EPOCH + (aware - _EPOCH_UTC)
    return aware.astimezone(dt.timezone.utc).replace(tzinfo=None)

def parse(text, pointer, offset_required=False):
    """ISO 8601 / RFC 3339 text -> naive UTC, or 422 ``validation-failed`` naming ``pointer``.

    Args:
        text: the value (None -> None).
        pointer: JSON pointer of the field in the request (``/occurred_at``, ``/query/since``).
        offset_required: refuse text without a UTC offset (else it is read as UTC).
    """
    if text is None:
        return None
    last = _last
    if last[0] is text and last[1] == offset_required:  # the same text object again (a reader, then a service)
        return last[2]
    value = _wire(text)
    if value is not None:
        _remember(text, offset_required, value)
        return value
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError):
        value = None
    if value is None or (offset_required and value.tzinfo is None):
        what = "an RFC 3339 date-time with offset, e.g. 2026-01-31T12:00:00+08:00" if offset_required \
            else "an ISO 8601 date-time"
        raise Problem(422, "validation-failed", "Validation failed", f"{pointer.rsplit('/', 1)[-1]}: expected {what}",
                      errors=[{"pointer": pointer, "validator": "format", "message": f"expected {what}"}])
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    _remember(text, offset_required, value)
    return value


def _wire(text):
    """``YYYY-MM-DDTHH:MM:SSZ`` (what ``iso`` writes) read as the naive UTC it is, with no zone work; else None."""
    if (isinstance(text, str) and len(text) == 20 and text[19] == "Z" and text[10] == "T"
            and text[4] == text[7] == "-" and text[13] == text[16] == ":"):
        try:
            value = dt.datetime.fromisoformat(text[:19])
        except ValueError:
            return None
        if value.tzinfo is None:
            return value
    return None


_last = (None, None, None)  # the last parse (text, offset_required, value): callers often parse a value twice


def _remember(text, offset_required, value):
    global _last
    _last = (text, offset_required, value)  # one tuple: a reader in another thread sees this one or the previous


def local_text(value, tz_name, fmt="%Y-%m-%d %H:%M:%S"):
    """An instant (naive UTC, aware, or ISO text) shown in the business time zone ``tz_name``; "" for None."""
    if value is None or value == "":
        return ""
    from zoneinfo import ZoneInfo
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(ZoneInfo(tz_name)).strftime(fmt)
