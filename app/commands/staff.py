"""``patron staff create|passwd|deactivate``: staff accounts from the command line (audited as cli:<user>)."""
import getpass
import os
import sys


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


def register(sub):
    grp = sub.add_parser("staff", help="staff accounts: create, set passwords, deactivate") \
        .add_subparsers(dest="staff_command", required=True)
    p = grp.add_parser("create", help="create a staff member with a password (generated and printed once)")
    p.add_argument("staff_no")
    p.add_argument("--name", required=True)
    p.add_argument("--department", required=True, help="a department code of the staff policy")
    p.add_argument("--roles", required=True, help="comma separated role codes of the staff policy")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument("--must-change", action="store_true", help="require a change at the first sign-in")
    p.set_defaults(func=cmd_create)
    p = grp.add_parser("passwd", help="set a password (generated and printed once unless --password-stdin); "
                                      "ends the staff member's sessions and lifts a lock")
    p.add_argument("staff_no")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--must-change", action="store_true", help="an admin reset: change required at next sign-in")
    p.add_argument("--reset-totp", action="store_true", help="also remove the TOTP second factor")
    p.set_defaults(func=cmd_passwd)
    p = grp.add_parser("deactivate", help="deactivate; every session ends at once")
    p.add_argument("staff_no")
    p.set_defaults(func=cmd_deactivate)
