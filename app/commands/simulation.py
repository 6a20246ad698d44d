"""``patron simulate``: replay a history against a candidate policy set; ``generate``, ``preview``, ``shadow``."""
import json
import os
import sys
import time

from app.cli import open_app as _ctx  # the command's app: context pushed, connection open, policy loaded


class Bar:
    """A progress bar on a terminal (stderr); silent when stderr is not one."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done, total):
        if not self.tty:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        rate = done / max(1e-9, now - self.started)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r[{bar:<30}] {frac * 100:5.1f}%  {done:,}/{total:,} records  {rate:,.0f}/s ")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


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
            "from": getattr(args, "from"), "to": args.to, "members": args.members, "partitions": args.partitions,
            "workers": args.workers, "point_value_fen": args.point_value_fen}
    bar = Bar()
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
    _ctx(args)
    result = preview.period_end(args.at)
    if args.csv:
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


def register(subparsers):
    p = subparsers.add_parser("simulate", help="replay a history against a candidate policy set (analysts)",
                              description="patron simulate --candidate DIR --events db|FILE --from DATE --to DATE "
                                          "--out DIR, or a subcommand: generate, preview, shadow")
    p.add_argument("--candidate", help="folder holding the candidate policies/ and rules/")
    p.add_argument("--baseline", default="active", help="'active' (the live set, default) or a folder")
    p.add_argument("--events", default="db", help="'db' (the live history, read only), FILE.jsonl or FILE.csv")
    p.add_argument("--from", help="first day of the window (YYYY-MM-DD, policy time zone)")
    p.add_argument("--to", help="end of the window (YYYY-MM-DD; period-end jobs due at its start run)")
    p.add_argument("--members", help="sample: N members, N%% of members, or @file of member ids")
    p.add_argument("--out", default="simulation-out", help="folder for report.json/.csv/.txt/.html, members.csv")
    p.add_argument("--partitions", type=int, default=1,
                   help="split members over this many replays per policy set (exact only without a binding "
                        "global daily points budget, see docs/simulation.md)")
    p.add_argument("--workers", type=int, default=None, help="processes at once (default: CPU count)")
    p.add_argument("--point-value-fen", type=int, default=1, help="money value of one point in fen (default 1)")
    p.set_defaults(func=cmd_run)
    sub = p.add_subparsers(dest="simulate_command")
    g = sub.add_parser("generate", help="write a synthetic history (JSONL) with documented distributions")
    g.add_argument("--members", type=int, required=True)
    g.add_argument("--days", type=int, required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--start", default="2025-01-01", help="first day (YYYY-MM-DD)")
    g.add_argument("--plan", default="yule_monthly", help="paid plan code subscribers take ('' for none)")
    g.add_argument("--out", help="output file (default: stdout)")
    g.set_defaults(func=cmd_generate)
    v = sub.add_parser("preview", help="what the next deduction/expiry does to every member (active policy)")
    v.add_argument("--at", help="instant to preview (RFC 3339; default: the next deduction date)")
    v.add_argument("--csv", action="store_true", help="CSV for member notices")
    v.set_defaults(func=cmd_preview)
    s = sub.add_parser("shadow", help="evaluate a candidate set on live events with no effects")
    s.add_argument("shadow_command", choices=("start", "stop", "report"))
    s.add_argument("--candidate", help="folder holding the candidate policies/ and rules/ (start)")
    s.set_defaults(func=cmd_shadow)
