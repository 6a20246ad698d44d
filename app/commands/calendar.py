"""`patron calendar suggest`: a year's holidays and make-up workdays from the holidays package, as calendar policy YAML."""
import sys

import click


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
    if args.json:
        from app.cli import echo_json
        echo_json({"year": args.year, "source": note["source"], "provisional": note["provisional"],
                   "kind": "calendar", "calendars": out})
        return 0
    print(f"# {args.year}: China public holidays (closed) and make-up workdays (调休, open) from {note['source']}.")
    if note["provisional"]:
        print(f"# PROVISIONAL: the package has no published schedule for {args.year} (no make-up workdays);")
        print("# run this again once the State Council publishes it, usually in November of the year before.")
    print("# Review, then merge these dates into policies/calendar.yaml and run `patron policy check`.")
    print(yaml.safe_dump({"kind": "calendar", "calendars": out}, allow_unicode=True, sort_keys=False,
                         default_flow_style=None, width=100), end="")
    return 0


def register(root):
    from app.cli import command, group, json_option
    grp = group(root, "calendar", "business calendars")
    command(grp, "suggest", cmd_suggest,
            click.Option(["--year"], type=click.IntRange(1900, 2200), required=True),
            click.Option(["--calendar"], help="one calendar of the policy (default: every one that lists holidays)"),
            json_option(), kind="read",
            help="a year's holidays and make-up workdays as calendar policy YAML (needs the holidays extra)")
