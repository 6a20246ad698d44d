"""``patron ledger reconcile|balances``: the ledger's invariants and balances from the command line."""
import json
import sys


def cmd_reconcile(args):
    from app import policy
    from app.cli import _app
    from app.db import db
    from app.services.ledger.reconcile import reconcile
    app = _app(args)
    with app.app_context(), db.connection_context():
        policy.startup(app)
        report = reconcile(customers=args.customer or None, store=args.store)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for name, check in report["checks"].items():
            print(f"{'ok   ' if check['ok'] else 'DRIFT'} {name}" + ("" if check["ok"] else f" ({check['count']})"))
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


def register(subparsers):
    lp = subparsers.add_parser("ledger", help="accounts ledger").add_subparsers(dest="ledger_command", required=True)
    p = lp.add_parser("reconcile", help="check every ledger invariant; exit 1 on drift")
    p.add_argument("--customer", action="append", help="limit per-account checks to this customer (repeatable)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--store", action="store_true", help="also record the report in the database")
    p.set_defaults(func=cmd_reconcile)
    p = lp.add_parser("balances", help="balances of one customer")
    p.add_argument("customer")
    p.set_defaults(func=cmd_balances)
