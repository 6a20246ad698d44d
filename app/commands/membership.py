"""``patron membership show|history|kpis|run``: members, KPIs and the membership jobs from the command line."""
import json
import sys

from app.cli import open_app as _ctx  # the command's app: context pushed, connection open, policy loaded

JOBS = ("deduct_growth", "renew_plans", "issue_coupons")


def _print(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_show(args):
    from app.errors import Problem
    from app.services import membership
    _ctx(args)
    try:
        _print(membership.view(args.member) if not args.history else membership.history(args.member, args.limit))
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def cmd_kpis(args):
    from app.errors import Problem
    from app.services.membership import kpi
    _ctx(args)
    try:
        report = kpi.compute(args.month_from, args.month_to or args.month_from)
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
    import jobs.membership as jm
    _ctx(args)
    _print(getattr(jm, args.job)(at=args.at))
    return 0


def register(subparsers):
    mp = subparsers.add_parser("membership", help="members, KPIs, membership jobs") \
        .add_subparsers(dest="membership_command", required=True)
    p = mp.add_parser("show", help="the member view (or --history)")
    p.add_argument("member")
    p.add_argument("--history", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_show)
    p = mp.add_parser("kpis", help="membership KPIs per month")
    p.add_argument("--from", dest="month_from", required=True, help="YYYY-MM")
    p.add_argument("--to", dest="month_to", help="YYYY-MM (default: --from)")
    p.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_kpis)
    p = mp.add_parser("run", help="run a membership job now")
    p.add_argument("job", choices=JOBS)
    p.add_argument("--at", help="RFC 3339 instant to run the job for (default: now)")
    p.set_defaults(func=cmd_run)
