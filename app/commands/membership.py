"""``patron membership show|history|kpis|run``: members, KPIs and the membership jobs from the command line."""
import json
import sys

import click

from app.cli import open_app as _ctx  # the command's app: context pushed, connection open, policy loaded

JOBS = ("deduct_growth", "renew_plans", "issue_coupons")


def _print(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_show(args):
    from app.errors import Problem
    from app.services import membership
    _ctx(args)
    try:
        if args.history:  # one page, as GET /v1/members/<id>/history answers it (--cursor: the next one)
            items, next_cursor = membership.history(args.member, args.limit, args.cursor)
            _print({"items": items, "next_cursor": next_cursor})
        else:
            _print(membership.view(args.member))
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def cmd_kpis(args):
    from app.errors import Problem
    from app.services.membership import kpi
    _ctx(args)
    try:
        from app.cli import Progress
        with Progress("months", quiet=args.json) as bar:
            report = kpi.compute(args.month_from, args.month_to or args.month_from, progress=bar)
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    if args.csv:
        sys.stdout.write(kpi.to_csv(report))
    else:
        _print(report)
    return 0


def cmd_run(args):
    """Run one membership job now, in this process (``--at`` replays a date, e.g. a year end)."""
    import jobs
    import jobs.membership as jm
    from app.cli import Progress
    _ctx(args)
    with Progress(args.job.replace("_", " ")) as bar, jobs.reporting(bar):
        out = getattr(jm, args.job)(at=args.at)
    _print(out)
    return 0


def register(root):
    from app.cli import command, group, json_option
    grp = group(root, "membership", "members, KPIs, membership jobs")
    command(grp, "show", cmd_show, click.Argument(["member"]), click.Option(["--history"], is_flag=True),
            click.Option(["--limit"], type=click.IntRange(1, 500), default=50, show_default=True),
            click.Option(["--cursor"], help="with --history: the next_cursor of the previous page"), json_option(),
            kind="read", help="the member view (or --history), as JSON")
    command(grp, "kpis", cmd_kpis, click.Option(["--from", "month_from"], required=True, help="YYYY-MM"),
            click.Option(["--to", "month_to"], help="YYYY-MM (default: --from)"), click.Option(["--csv"], is_flag=True),
            json_option(), kind="read", help="membership KPIs per month (JSON, or --csv)")
    command(grp, "run", cmd_run, click.Argument(["job"], type=click.Choice(JOBS)),
            click.Option(["--at"], help="RFC 3339 instant to run the job for (default: now)"),
            kind="write", help="run a membership job now")
