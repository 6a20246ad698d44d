"""``patron stats service|tickets``: the service and ticket statistics as JSON or CSV exports, with a progress bar.

The same reports as ``GET /v1/service/stats`` and ``GET /v1/ticket-stats`` (same validation, same CSV with a
UTF-8 BOM), for an operator's export without an API key.
"""
import sys

import click

from app.cli import Progress, command, echo_json, group, json_option, open_app


def _refused(exc):
    """A Problem as one line on stderr (with each field error), exit code 2."""
    fields = "; ".join(f"{e['pointer']}: {e['message']}" for e in getattr(exc, "extra", {}).get("errors") or [])
    print(f"error: {exc.detail or exc.title}" + (f" ({fields})" if fields else ""), file=sys.stderr)
    return 2


def cmd_service(args):
    """Service statistics per business day and agent / skill group / channel."""
    from app.errors import Problem
    from app.services.service import stats
    open_app(args)
    query = {"from": args.date_from, "to": args.date_to, "by": args.by, "group": args.group}
    try:
        start, end, dims, grp = stats.parse_query({k: v for k, v in query.items() if v is not None})
        with Progress("conversations", quiet=args.json) as bar:
            result = stats.statistics(start, end, dims, grp, progress=bar)
    except Problem as exc:
        return _refused(exc)
    if args.csv:
        sys.stdout.write(stats.statistics_csv(result))
    else:
        echo_json(result)
    return 0


def cmd_tickets(args):
    """Ticket statistics: volume, backlog by age, SLA compliance, response and resolution times."""
    from app.errors import Problem
    from app.platform import timefmt
    from app.services.tickets import stats
    open_app(args)
    try:
        start = timefmt.parse(args.date_from, "/query/from") if args.date_from else None
        end = timefmt.parse(args.date_to, "/query/to") if args.date_to else None
        if start and end and start >= end:
            raise Problem(422, "invalid-window", "Invalid window", "'from' must be before 'to'")
        with Progress("sections", quiet=args.json) as bar:
            data = stats.stats(start, end, progress=bar)
    except Problem as exc:
        return _refused(exc)
    if args.csv:
        sys.stdout.write(stats.to_csv(data))
    else:
        echo_json(data)
    return 0


def register(root):
    grp = group(root, "stats", "service and ticket statistics exports (JSON or CSV)")
    csv = click.Option(["--csv"], is_flag=True, help="CSV with a UTF-8 BOM instead of JSON")
    command(grp, "service", cmd_service,
            click.Option(["--from", "date_from"], help="first business day YYYY-MM-DD (default: today)"),
            click.Option(["--to", "date_to"], help="last business day YYYY-MM-DD (default: --from; 92 days at most)"),
            click.Option(["--by"], help="comma list of agent, group, channel (default: all three)"),
            click.Option(["--group"], help="only this skill group"), csv, json_option(), kind="read")
    command(grp, "tickets", cmd_tickets,
            click.Option(["--from", "date_from"], help="RFC 3339 instant (default: --to minus 30 days)"),
            click.Option(["--to", "date_to"], help="RFC 3339 instant (default: now)"), csv, json_option(),
            kind="read")
