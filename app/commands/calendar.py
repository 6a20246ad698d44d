"""`patron calendar suggest`: a year's holidays and make-up workdays from the holidays package, as calendar policy YAML."""
import sys


def cmd_suggest(args):
    import yaml

    from app.cli import _app
    from app.platform import holidays
    if not holidays.available():
        print("error: the holidays package is not installed (pip install -e '.[holidays]')", file=sys.stderr)
        return 2
    app = _app(args)
    from app.policy import read_dirs
    from app.policy.sets import PolicySet
    ps = PolicySet(read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"]))
    docs = ps.get("calendar")
    calendars = (docs[0].get("calendars") if docs else None) or {}
    names = [args.calendar] if args.calendar else [n for n, c in calendars.items()
                                                   if c.get("holidays") or c.get("workdays")]
    if not names:
        names = ["business"]
    out = {}
    note = None
    for name in names:
        cal = calendars.get(name)
        if cal is None:
            print(f"error: no calendar {name!r} in the calendar policy (have: {', '.join(calendars)})",
                  file=sys.stderr)
            return 2
        found = holidays.suggest(cal, args.year)
        note = found
        out[name] = {"holidays": found["holidays"], "workdays": found["workdays"]}
    print(f"# {args.year}: China public holidays (closed) and make-up workdays (调休, open) from {note['source']}.")
    if note["provisional"]:
        print(f"# PROVISIONAL: the package has no published schedule for {args.year} (no make-up workdays);")
        print("# run this again once the State Council publishes it, usually in November of the year before.")
    print("# Review, then merge these dates into policies/calendar.yaml and run `patron policy check`.")
    print(yaml.safe_dump({"kind": "calendar", "calendars": out}, allow_unicode=True, sort_keys=False,
                         default_flow_style=None, width=100), end="")
    return 0


def register(subparsers):
    cp = subparsers.add_parser("calendar", help="business calendars").add_subparsers(dest="calendar_command",
                                                                                   required=True)
    p = cp.add_parser("suggest", help="a year's holidays and make-up workdays as calendar policy YAML "
                                      "(needs the holidays extra)")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--calendar", help="one calendar of the policy (default: every one that lists holidays)")
    p.set_defaults(func=cmd_suggest)
