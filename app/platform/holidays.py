"""Public holidays and make-up workdays (调休) from a maintained package, to suggest and check calendar policies.

The data comes from the optional ``holidays`` package (``pip install -e '.[holidays]'``); without it
nothing here is available and ``patron policy check`` simply does not compare. The package carries the
State Council's published schedule per year; for a year not yet published it computes the fixed-rule
holidays only (no make-up workdays), which :func:`year_data` reports as ``provisional``.
"""
import datetime as dt

COUNTRY = "CN"


def available():
    """True when the ``holidays`` package is installed."""
    try:
        import holidays  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


def year_data(year, country=COUNTRY):
    """The package's data for one year.

    Returns:
        dict with ``holidays`` {date: name}, ``workdays`` [dates] (weekend days that are worked),
        ``source`` (package and version) and ``provisional`` (no make-up workdays published).
    """
    import holidays
    cal = holidays.country_holidays(country, years=year)
    days = {d: name for d, name in sorted(cal.items()) if d.year == year}
    workdays = sorted(d for d in getattr(cal, "weekend_workdays", ()) if d.year == year)
    return {"holidays": days, "workdays": workdays, "source": f"holidays {holidays.__version__}",
            "provisional": not workdays}


def _week_open(calendar_doc):
    week = calendar_doc.get("week") or {}
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return [bool(week.get(n)) for n in names]


def suggest(calendar_doc, year, country=COUNTRY):
    """``holidays`` and ``workdays`` of one calendar for a year: holidays on days its week opens,
    make-up workdays on days its week closes (as ISO strings), plus the data's source."""
    data = year_data(year, country)
    open_ = _week_open(calendar_doc)
    return {"holidays": [d.isoformat() for d in data["holidays"] if open_[d.weekday()]],
            "workdays": [d.isoformat() for d in data["workdays"] if not open_[d.weekday()]],
            "source": data["source"], "provisional": data["provisional"]}


def _dates(values, year):
    out = set()
    for v in values or ():
        try:
            d = v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))
        except ValueError:
            continue
        if d.year == year:
            out.add(d.isoformat())
    return out


def compare(calendar_doc, year, country=COUNTRY):
    """Differences between a calendar and the package for a year, as sentences (empty: they agree).

    Only calendars that list holidays or workdays at all are compared (24x7 ones are not).
    """
    if calendar_doc.get("always_open") or not (calendar_doc.get("holidays") or calendar_doc.get("workdays")):
        return []
    want = suggest(calendar_doc, year, country)
    have_h = _dates(calendar_doc.get("holidays"), year)
    have_w = _dates(calendar_doc.get("workdays"), year)
    if not have_h and not have_w:
        return [f"no holidays or make-up workdays for {year} (run `patron calendar suggest --year {year}`)"]
    out = []
    for label, have, expected in (("holidays", have_h, set(want["holidays"])),
                                  ("workdays", have_w, set(want["workdays"]))):
        if expected - have:
            out.append(f"{year} {label} missing: {', '.join(sorted(expected - have))}")
        if have - expected and not (label == "workdays" and want["provisional"]):
            out.append(f"{year} {label} not in {want['source']}: {', '.join(sorted(have - expected))}")
    return out
