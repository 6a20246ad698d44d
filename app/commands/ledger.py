"""``patron ledger reconcile|balances``: the ledger's invariants and balances from the command line."""
import json
import sys

import click


def cmd_reconcile(args):
    from app import policy
    from app.cli import _app
    from app.db import db
    from app.cli import status_word
    from app.services.ledger.reconcile import reconcile
    app = _app(args)
    with app.app_context(), db.connection_context():
        policy.startup(app)
        from app.cli import Progress
        with Progress("reconcile", quiet=args.json) as bar:
            report = reconcile(customers=list(args.customer) or None, store=args.store, progress=bar)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for name, check in report["checks"].items():
            click.echo(f"{status_word(check['ok'], 'ok   ', 'DRIFT')} {name}"
                       + ("" if check["ok"] else f" ({check['count']})"))
            for row in check["drift"]:
                print(f"      {json.dumps(row, ensure_ascii=False)}")
        for asset, t in sorted(report["totals"].get("per_asset", {}).items()):
            print(f"total {asset}: snapshots {t.get('snapshots', 0)}, entries {t.get('entries', 0)}")
        print("ledger reconciled: no drift" if report["ok"] else "ledger DRIFT found", file=sys.stderr)
    return 0 if report["ok"] else 1


def cmd_balances(args):
    from app import policy
    from app.cli import _app
    from app.db import db
    from app.errors import Problem
    from app.services import ledger
    app = _app(args)
    with app.app_context(), db.connection_context():
        policy.startup(app)
        try:
            print(json.dumps(ledger.balances(args.customer), indent=2, ensure_ascii=False))
        except Problem as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 1
    return 0


def register(root):
    from app.cli import command, group, json_option
    grp = group(root, "ledger", "accounts ledger")
    command(grp, "reconcile", cmd_reconcile,
            click.Option(["--customer"], multiple=True, help="limit per-account checks to this customer (repeatable)"),
            json_option(), click.Option(["--store"], is_flag=True, help="also record the report in the database"),
            kind="read", help="check every ledger invariant; exit 1 on drift")
    command(grp, "balances", cmd_balances, click.Argument(["customer"]), json_option(), kind="read",
            help="balances of one customer (JSON)")
