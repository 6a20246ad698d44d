"""``patron staff create|passwd|deactivate``: staff accounts from the command line (audited as cli:<user>)."""
import getpass
import os
import sys

import click


def _cli_actor():
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = str(os.getuid())
    return f"cli:{user}"


def _run(args, fn):
    from app import policy
    from app.cli import _app
    from app.db import db
    from app.errors import Problem
    app = _app(args)
    with app.app_context(), db.connection_context():
        policy.startup(app)
        try:
            return fn()
        except Problem as exc:
            print(f"error: {exc.code}: {exc.detail or exc.title}", file=sys.stderr)
            return None


def _password(args):
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return None  # generated and printed once


def cmd_create(args):
    from app.services import identity

    def fn():
        out = identity.create_staff(_cli_actor(), {"staff_no": args.staff_no, "name": args.name,
                                                   "department": args.department,
                                                   "roles": [r.strip() for r in args.roles.split(",") if r.strip()]})
        return out, identity.set_password(_cli_actor(), args.staff_no, _password(args), must_change=args.must_change)
    result = _run(args, fn)
    if result is None:
        return 2
    staff, pw = result
    print(f"created {staff['staff_no']} ({staff['department']}: {', '.join(staff['roles'])})")
    if "password" in pw:
        print(f"password (shown once): {pw['password']}")
    return 0


def cmd_passwd(args):
    from app.services import identity

    def fn():
        if args.must_change:
            return identity.admin_reset(_cli_actor(), args.staff_no, _password(args), args.reset_totp)
        out = identity.set_password(_cli_actor(), args.staff_no, _password(args))
        if args.reset_totp:
            identity.reset_totp(_cli_actor(), args.staff_no)
        return out
    result = _run(args, fn)
    if result is None:
        return 2
    print(f"password set for {args.staff_no}; {result['sessions_ended']} session(s) ended"
          + ("; must be changed at the next sign-in" if result.get("must_change") else ""))
    if "password" in result:
        print(f"password (shown once): {result['password']}")
    return 0


def cmd_deactivate(args):
    from app.services import identity
    result = _run(args, lambda: identity.deactivate(_cli_actor(), args.staff_no))
    if result is None:
        return 2
    print(f"{args.staff_no} deactivated; {result['sessions_ended']} session(s) ended")
    return 0


def register(root):
    from app.cli import command, group
    grp = group(root, "staff", "staff accounts: create, set passwords, deactivate")
    command(grp, "create", cmd_create, click.Argument(["staff_no"]), click.Option(["--name"], required=True),
            click.Option(["--department"], required=True, help="a department code of the staff policy"),
            click.Option(["--roles"], required=True, help="comma separated role codes of the staff policy"),
            click.Option(["--password-stdin"], is_flag=True, help="read the password from the first line of stdin"),
            click.Option(["--must-change"], is_flag=True, help="require a change at the first sign-in"),
            kind="write", help="create a staff member with a password (generated and printed once)")
    command(grp, "passwd", cmd_passwd, click.Argument(["staff_no"]), click.Option(["--password-stdin"], is_flag=True),
            click.Option(["--must-change"], is_flag=True, help="an admin reset: change required at next sign-in"),
            click.Option(["--reset-totp"], is_flag=True, help="also remove the TOTP second factor"),
            kind="write", help="set a password (generated and printed once unless --password-stdin); "
                               "ends the staff member's sessions and lifts a lock")
    command(grp, "deactivate", cmd_deactivate, click.Argument(["staff_no"]), kind="write",
            help="deactivate; every session ends at once")
