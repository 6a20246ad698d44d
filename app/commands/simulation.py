"""``patron simulate``: replay a history against a candidate policy set; ``generate``, ``preview``, ``shadow``."""
import argparse
import json
import os
import sys

import click

from app.cli import open_app as _ctx  # the command's app: context pushed, connection open, policy loaded


def cmd_run(args):
    from app.errors import Problem
    from app.services import simulation
    if args.events == "db" or args.baseline in (None, "active"):
        _ctx(args)
    else:
        from app.cli import _app
        app = _app(args)
        app.app_context().push()
    spec = {"candidate": args.candidate, "baseline": args.baseline, "events": args.events,
            "from": args.from_, "to": args.to, "members": args.members, "partitions": args.partitions,
            "workers": args.workers, "point_value_fen": args.point_value_fen}
    from app.cli import Progress
    bar = Progress("records")
    try:
        rep, rows = simulation.simulate(spec, bar)
    except Problem as exc:
        bar.close()
        print(f"error: {exc.detail}", file=sys.stderr)
        for e in (exc.extra or {}).get("errors", [])[:20]:
            print(f"  {e}", file=sys.stderr)
        return 2
    bar.close()
    paths = simulation.report.write(rep, rows, args.out)
    sys.stdout.write(simulation.report.to_text(rep))
    print(f"\nwritten: {', '.join(sorted(paths.values()))}", file=sys.stderr)
    return 0


def cmd_generate(args):
    from app.services.simulation import sources
    out = args.out or "-"
    if out == "-":
        for rec in sources.generate(args.members, args.days, args.seed, start=args.start, plan_code=args.plan):
            sys.stdout.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        return 0
    n = sources.generate(args.members, args.days, args.seed, start=args.start, plan_code=args.plan, out=out)
    print(f"{n} records -> {out}", file=sys.stderr)
    return 0


def cmd_preview(args):
    from app.services.simulation import preview
    from app.cli import Progress
    _ctx(args)
    with Progress("members", quiet=args.json) as bar:
        result = preview.period_end(args.at, progress=bar)
    if args.csv and not args.json:
        sys.stdout.write(preview.to_csv(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def cmd_shadow(args):
    from app.errors import Problem
    from app.services.simulation import shadow
    _ctx(args)
    try:
        if args.shadow_command == "start":
            if not args.candidate:
                raise click.UsageError("shadow start needs --candidate DIR")
            out = shadow.start(args.candidate, f"cli:{os.environ.get('USER', 'unknown')}")
        elif args.shadow_command == "stop":
            out = shadow.stop()
        else:
            out = shadow.report()
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _run_group(args):
    if click.get_current_context().invoked_subcommand is not None:
        return None
    if not args.candidate:
        raise click.UsageError("--candidate DIR is required (or a subcommand: generate, preview, shadow)")
    return cmd_run(args)


def register(root):
    from app.cli import command, json_option, run_quietly_on_a_closed_pipe

    def callback(**kwargs):
        root_ctx = click.get_current_context().find_root()
        return run_quietly_on_a_closed_pipe(
            _run_group, argparse.Namespace(database_url=root_ctx.params.get("database_url"), **kwargs))

    grp = click.Group("simulate", invoke_without_command=True, callback=callback, params=[
        click.Option(["--candidate"], help="folder holding the candidate policies/ and rules/"),
        click.Option(["--baseline"], default="active", help="'active' (the live set, default) or a folder"),
        click.Option(["--events"], default="db", help="'db' (the live history, read only), FILE.jsonl or FILE.csv"),
        click.Option(["--from", "from_"], help="first day of the window (YYYY-MM-DD, policy time zone)"),
        click.Option(["--to"], help="end of the window (YYYY-MM-DD; period-end jobs due at its start run)"),
        click.Option(["--members"], help="sample: N members, N% of members, or @file of member ids"),
        click.Option(["--out"], default="simulation-out", help="folder for report.json/.csv/.txt/.html, members.csv"),
        click.Option(["--partitions"], type=click.IntRange(1, 1024), default=1,
                     help="split members over this many replays per policy set (exact only without a binding "
                          "global daily points budget, see docs/simulation.md)"),
        click.Option(["--workers"], type=click.IntRange(1, 256), default=None,
                     help="processes at once (default: CPU count)"),
        click.Option(["--point-value-fen"], type=int, default=1, help="money value of one point in fen (default 1)")],
        help="replay a history against a candidate policy set (analysts): patron simulate --candidate DIR "
             "--events db|FILE --from DATE --to DATE --out DIR, or a subcommand: generate, preview, shadow",
        short_help="replay a history against a candidate policy set (analysts)")
    grp.kind = "write"
    root.add_command(grp)
    command(grp, "generate", cmd_generate, click.Option(["--members"], type=click.IntRange(1), required=True),
            click.Option(["--days"], type=click.IntRange(1), required=True),
            click.Option(["--seed"], type=int, default=1, show_default=True),
            click.Option(["--start"], default="2025-01-01", show_default=True, help="first day (YYYY-MM-DD)"),
            click.Option(["--plan"], default="yule_monthly", show_default=True,
                         help="paid plan code subscribers take ('' for none)"),
            click.Option(["--out"], help="output file (default: stdout)"),
            kind="write", help="write a synthetic history (JSONL) with documented distributions")
    command(grp, "preview", cmd_preview,
            click.Option(["--at"], help="instant to preview (RFC 3339; default: the next deduction date)"),
            click.Option(["--csv"], is_flag=True, help="CSV for member notices"), json_option(),
            kind="read", help="what the next deduction/expiry does to every member (active policy), as JSON")
    command(grp, "shadow", cmd_shadow, click.Argument(["shadow_command"], type=click.Choice(("start", "stop", "report"))),
            click.Option(["--candidate"], help="folder holding the candidate policies/ and rules/ (start)"),
            json_option(), kind="write", help="evaluate a candidate set on live events with no effects (JSON)")
