"""`patron policy check|diff|explain|apply|history`: operators' tools for policy sets."""
import json
import sys
from pathlib import Path

import click


def _files(app, folder):
    from app.policy import read_dirs, read_root
    if folder:
        if not Path(folder).is_dir():
            raise SystemExit(f"error: {folder} is not a folder (expected one holding policies/ and rules/)")
        return read_root(folder)
    return read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])


def _app(args):
    from app.cli import _app as make
    return make(args)


def cmd_check(args):
    from app import policy
    app = _app(args)
    with app.app_context():
        ps, errors = policy.check(_files(app, args.dir), complete=not args.partial)
    warnings = _calendar_warnings(ps)
    n_examples = sum(len(d.get("examples") or ()) for d in ps.get("ruleset"))
    if args.json:
        from app.cli import echo_json
        echo_json({"ok": not errors, "files": len(ps.files), "errors": [str(e) for e in errors],
                   "warnings": warnings, "examples": n_examples, "version": ps.version})
        return 1 if errors else 0
    from app.cli import status_word
    for err in errors:
        print(err)
    for warning in warnings:
        click.echo(click.style("warning: ", fg="yellow") + warning, err=True)
    click.echo(f"{status_word(not errors)}: {len(ps.files)} file(s), {len(errors)} error(s), "
               f"{n_examples} example(s), version {ps.version}", err=True)
    return 1 if errors else 0


def _calendar_warnings(ps):
    """This year's and the coming year's holidays checked against the holidays package (when installed)."""
    from app.platform import clock, holidays
    if not holidays.available():
        return []
    year = clock.now().year
    out = []
    for doc in ps.get("calendar"):
        for name, cal in (doc.get("calendars") or {}).items():
            if not isinstance(cal, dict):
                continue
            for y in (year, year + 1):
                out += [f"{doc['_file']}: calendars.{name}: {msg}" for msg in holidays.compare(cal, y)]
    return out


def cmd_diff(args):
    from app.policy.diff import diff, render
    from app.policy import read_root
    for d in (args.dir_a, args.dir_b):
        if not Path(d).is_dir():
            print(f"error: {d} is not a folder", file=sys.stderr)
            return 2
    changes = diff(read_root(args.dir_a), read_root(args.dir_b))
    if args.json:
        print(json.dumps(changes, ensure_ascii=False, indent=2, default=str))
    else:
        for line in render(changes):
            print(line)
        print(f"{len(changes)} change(s)", file=sys.stderr)
    return 0


def _print_tree(node, depth=0):
    pad = "    " * depth
    mark = "✓" if node["result"] else "✗"
    if "field" in node:
        actual = json.dumps(node["actual"], ensure_ascii=False) if node["present"] else "(missing)"
        print(f"{pad}{mark} {node['field']} {node['op']} {json.dumps(node['value'], ensure_ascii=False)}"
              f"  <- {actual}")
    else:
        print(f"{pad}{mark} {node['op']}")
    for kid in node.get("children", ()):
        _print_tree(kid, depth + 1)


def cmd_explain(args):
    from app import engine, policy
    from app.db import connection
    app = _app(args)
    try:
        facts = json.loads(Path(args.event).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.event}: {exc}", file=sys.stderr)
        return 2
    with app.app_context():
        if args.active:
            with connection():
                ps = policy.active()
        else:
            ps, errors = policy.check(_files(app, args.dir), complete=False)
            if errors:
                for err in errors:
                    print(err, file=sys.stderr)
                print("error: the policy set is invalid", file=sys.stderr)
                return 1
        from app.errors import Problem
        try:
            out = engine.explain(args.ruleset, facts, policy_set=ps)
        except Problem as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"ruleset {out['ruleset']} ({out['file']}), mode {out['mode']}, policy version {out['version']}")
    print(f"decision: {out['rule'] or 'no rule matched'}")
    for m in out["matches"]:
        print(f"  fires {m['rule']} (priority {m['priority']}): "
              + "; ".join(json.dumps(a, ensure_ascii=False) for a in m["actions"]))
    print("inputs: " + json.dumps(out["inputs"], ensure_ascii=False))
    for r in out["rules"]:
        state = "FIRES" if r["fired"] else ("matches (not fired: mode first)" if r["matched"] else "no match")
        print(f"rule {r['rule']} (priority {r['priority']}): {state}")
        _print_tree(r["condition"], 1)
    print(f"engines agree: {out['engines_agree']}")
    return 0


def cmd_apply(args):
    from app import policy
    from app.db import connection
    import getpass
    app = _app(args)
    with app.app_context(), connection():
        try:
            res = policy.apply(_files(app, args.dir), f"cli:{getpass.getuser()}", note=args.note)
        except policy.PolicyInvalid as exc:
            for err in exc.errors:
                print(err)
            print(f"REFUSED: {len(exc.errors)} error(s); active version unchanged", file=sys.stderr)
            return 1
    if res.changed:
        print(f"activated {res.version} (was {res.previous})")
    else:
        print(f"{res.version} is already active")
    return 0


def cmd_history(args):
    from app.db import connection
    from app.policy import store
    app = _app(args)
    with app.app_context(), connection():
        rows, _ = store.history(args.limit)
        current, _ = store.current()
    if args.json:
        from app.cli import echo_json
        echo_json({"active": current, "activations": rows})
        return 0
    for r in rows:
        star = "*" if r["version"] == current and r is rows[0] else " "
        print(f"{star} {r['seq']:>5}  {r['version']}  {r['activated_at']}  {r['activated_by']}"
              f"  (was {r['previous_version']}){'  ' + r['note'] if r['note'] else ''}")
    if not rows:
        print("no policy set applied yet", file=sys.stderr)
    return 0


def register(root):
    from app.cli import command, group, json_option
    grp = group(root, "policy", "check, diff, explain, apply policy sets")
    folder = click.Path(exists=True, file_okay=False)
    command(grp, "check", cmd_check, click.Argument(["dir"], required=False, type=folder),
            click.Option(["--partial"], is_flag=True,
                         help="check a fragment: do not require every kind and ruleset the product needs"),
            json_option(), kind="read", help="validate a policy set and run its examples (exit 1 on any error)")
    command(grp, "diff", cmd_diff, click.Argument(["dir_a"], type=folder), click.Argument(["dir_b"], type=folder),
            json_option(), kind="read", help="semantic diff of two policy sets")
    command(grp, "explain", cmd_explain, click.Argument(["ruleset"]),
            click.Argument(["event"]),
            click.Option(["--dir"], type=folder, help="policy folder (default: the configured ones)"),
            click.Option(["--active"], is_flag=True, help="use the active set from the database"), json_option(),
            kind="read", help="which rule fires for an event (a JSON file of facts), and why")
    command(grp, "apply", cmd_apply, click.Argument(["dir"], required=False, type=folder), click.Option(["--note"]),
            kind="write", help="validate and activate a policy set")
    command(grp, "history", cmd_history, click.Option(["--limit"], type=click.IntRange(1, 1000), default=50,
                                                       show_default=True),
            json_option(), kind="read", help="activations, newest first")
