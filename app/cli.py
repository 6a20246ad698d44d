"""The ``patron`` command: serve, db, apikey, demo, plus every group in app/commands/."""
import argparse
import os
import shutil
import sys


def _app(args=None):
    from app import create_app
    overrides = {}
    if args is not None and getattr(args, "database_url", None):
        overrides["DATABASE_URL"] = args.database_url
    return create_app(overrides)


def cmd_db_upgrade(args):
    app = _app(args)
    from app.migrations import upgrade
    with app.app_context():
        ran = upgrade()
    print(f"applied {len(ran)} migration(s)" + (": " + ", ".join(ran) if ran else " (up to date)"))


def cmd_db_status(args):
    """Applied and pending migrations, and drift between the database and the models; 1 unless clean."""
    app = _app(args)
    from app import drift
    from app.db import db
    from app.migrations import status
    with app.app_context():
        st = status()
        with db.connection_context():
            problems = drift.check() if not st["pending"] else []
    for name in st["applied"]:
        print(f"applied  {name}")
    for name in st["pending"]:
        print(f"pending  {name}")
    for name in st["unknown"]:
        print(f"unknown  {name} (applied to this database, not in this code: is the code older?)")
    for line in problems:
        print(f"drift    {line}")
    if st["pending"]:
        print(f"{len(st['pending'])} pending migration(s): run `patron db upgrade` (drift is checked after)")
    elif problems or st["unknown"]:
        print(f"schema differs from the models ({len(problems)} difference(s))")
    else:
        print(f"up to date: {len(st['applied'])} migration(s) applied, no drift")
    return 1 if st["pending"] or problems or st["unknown"] else 0


def cmd_apikey_create(args):
    app = _app(args)
    from app.db import db
    from app.errors import Problem
    from app.platform.auth import create_key
    with app.app_context(), db.connection_context():
        try:
            from app.db import write_transaction
            from app.platform import audit
            from app.commands.staff import _cli_actor
            with write_transaction():
                token, key = create_key(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()])
                audit.record(_cli_actor(), "apikey.create", f"api_key:{key.key_id}",
                             after={"name": key.name, "scopes": key.scopes})
        except Problem as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 2
    print(token)
    print(f"# key id {key.key_id}, scopes {key.scopes}; shown once, store it now", file=sys.stderr)
    return 0


def cmd_apikey_revoke(args):
    app = _app(args)
    from app.db import db
    from app.platform.auth import revoke_key
    from app.db import write_transaction
    from app.platform import audit
    from app.commands.staff import _cli_actor
    with app.app_context(), db.connection_context(), write_transaction():
        n = revoke_key(args.key_id)
        if n:
            audit.record(_cli_actor(), "apikey.revoke", f"api_key:{args.key_id}", before={"revoked": False},
                         after={"revoked": True})
    print("revoked" if n else "no such key (or already revoked)")
    return 0 if n else 1


def cmd_demo(args):
    """Upgrade the database, activate the sample policies, seed demo data, print the demo key.

    The key is kept in ``instance/demo-key-<database hash>`` (mode 600) and reused while it still opens this database,
    so running ``make run`` again does not pile up admin keys; when a new one is needed, the demo keys
    left behind are revoked.
    """
    app = _app(args)
    from app.db import db
    from app.migrations import upgrade
    from app import demo
    with app.app_context():
        upgrade()
        from app import policy
        policy.startup(app, apply_from_disk=True)
        with db.connection_context():
            # one file per database: a key saved for another database never opens this one
            import hashlib
            tag = hashlib.sha256(app.config["DATABASE_URL"].encode()).hexdigest()[:12]
            token, reused = _demo_key(os.path.join(app.instance_path, f"demo-key-{tag}"))
            seeded = demo.seed()
    print("=" * 64)
    print(f"Patron demo API key (admin scope; {'the same as last time' if reused else 'new'}):")
    print(f"  {token}")
    print("In your shell, for the examples in README.md and docs/:")
    print(f"  export PATRON_KEY={token}")
    passwords = seeded.get("identity") or []
    if passwords:
        print("Demo staff passwords (shown once; reset: patron staff passwd STAFF_NO):")
        for staff_no, name, roles, password in passwords:
            print(f"  {staff_no:<11} {password}  {name} ({', '.join(roles)})")
    else:
        print("Demo staff already have passwords (reset one: .venv/bin/patron staff passwd S-cs-1)")
    print("Sign in:")
    print(f"  curl -s -H 'Content-Type: application/json' -d '{{\"staff_no\": \"S-cs-1\", \"password\": \"...\"}}' "
          f"http://127.0.0.1:{args.port}/v1/auth/login")
    print("Try:")
    print(f"  curl -H \"Authorization: Bearer $PATRON_KEY\" http://127.0.0.1:{args.port}/v1/policies/active")
    print("=" * 64, flush=True)


def _demo_key(path):
    """(token, reused): the saved demo key if it still authenticates here, else a new one (old ones revoked)."""
    from app.errors import Problem
    from app.models.core import ApiKey
    from app.platform.auth import authenticate, create_key, revoke_key
    try:
        with open(path, encoding="utf-8") as fh:
            saved = fh.read().strip()
        authenticate(f"Bearer {saved}")
        return saved, True
    except (OSError, Problem):
        pass
    for old in ApiKey.select().where((ApiKey.name == "demo") & ApiKey.revoked_at.is_null()):
        revoke_key(old.key_id)
    token, _ = create_key("demo", ["admin"])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token, False


def cmd_serve(args):
    """Serve with gunicorn (threads; one process when jobs run in-process) or the dev server."""
    app = _app(args)  # fail fast on bad settings before gunicorn forks anything
    if args.database_url:
        os.environ["PATRON_DATABASE_URL"] = args.database_url
    redis = app.config.get("REDIS_URL")
    if args.dev:
        from app import policy
        policy.startup(app)  # as app.wsgi does: the engine evaluates the active set, installed here
        if not redis:
            from jobs.runner import start_ticker
            start_ticker(app)
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
        return 0
    workers = args.workers
    if workers is None:
        # without Redis the ticker lives in the web process: one process, many threads
        workers = 1 if not redis else 2 * (os.cpu_count() or 1) + 1
    os.environ.setdefault("PATRON_TICKER", "false" if redis else "true")
    if workers > 1:
        # /metrics must add up every worker's counters, not show whichever worker answered;
        # one folder per server (exec keeps our pid), so two servers never mix or wipe counters
        _clean_metric_dirs(app.instance_path)
        prom = os.path.join(app.instance_path, f"prometheus-{os.getpid()}")
        os.makedirs(prom, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom
    argv = ["gunicorn", "--bind", f"{args.host}:{args.port}", "--workers", str(workers),
            "--threads", str(args.threads), "--timeout", "60", "--graceful-timeout", "20",
            "--error-logfile", "-", "--logger-class", "app.logs.GunicornLogger"]
    import gunicorn
    if gunicorn.version_info >= (27,):
        # one control socket per user in ~/.gunicorn would collide between instances; we don't use it
        argv.append("--no-control-socket")
    argv.append("app.wsgi:app")
    import logging
    logging.getLogger("patron.serve").info(
        "serving on http://%s:%s (%s worker(s) x %s threads, jobs %s)", args.host, args.port, workers,
        args.threads, "on RQ" if redis else "in-process with ticker")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execvp(sys.executable, [sys.executable, "-m"] + argv)


def _clean_metric_dirs(instance_path):
    """Remove the metric folders of servers that are no longer running."""
    import glob
    for path in glob.glob(os.path.join(instance_path, "prometheus-*")):
        try:
            os.kill(int(path.rsplit("-", 1)[1]), 0)
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def cmd_apikey_list(args):
    app = _app(args)
    from app.db import db
    from app.models.core import ApiKey
    with app.app_context(), db.connection_context():
        keys = list(ApiKey.select().order_by(ApiKey.created_at))
    if args.json:
        import json
        print(json.dumps([{"id": k.key_id, "name": k.name, "scopes": k.scopes.replace(",", " ").split(),
                           "created_at": k.created_at.isoformat() + "Z",
                           "revoked_at": k.revoked_at.isoformat() + "Z" if k.revoked_at else None}
                          for k in keys], ensure_ascii=False, indent=2))
        return 0
    print(f"{'id':<14}{'name':<24}{'created':<21}{'revoked':<21}scopes")
    for k in keys:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-"
        print(f"{k.key_id:<14}{k.name[:22]:<24}{k.created_at.isoformat(timespec='seconds'):<21}"
              f"{revoked:<21}{k.scopes}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="patron", description="Patron platform command line")
    parser.add_argument("--database-url", help="override PATRON_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--dev", action="store_true", help="Werkzeug development server")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="upgrade the database, load sample policies and data, print a demo key")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_demo)

    dbp = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)
    dbp.add_parser("status", help="applied and pending migrations, drift from the models (exit 1 unless clean)"
                   ).set_defaults(func=cmd_db_status)

    kp = sub.add_parser("apikey", help="API keys").add_subparsers(dest="key_command", required=True)
    p = kp.add_parser("create", help="create a key (printed once)")
    p.add_argument("--name", required=True)
    p.add_argument("--scopes", required=True, help="comma separated, e.g. ledger:write,policy:read")
    p.set_defaults(func=cmd_apikey_create)
    p = kp.add_parser("list", help="list keys (never their secrets)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_apikey_list)
    p = kp.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_apikey_revoke)

    from app.commands import calendar, keys, ledger, membership, policy, simulation, staff, worker
    for group in (calendar, keys, ledger, membership, policy, simulation, staff, worker):  # every command group, listed
        group.register(sub)
    return parser


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    """Run one command; its exit code. Failures of the environment are one line on stderr, never a
    traceback: 2 = configuration, database or Redis unavailable; 130 = interrupted; 141 = the reader of
    our output went away (``patron ... | head``)."""
    import peewee
    import redis.exceptions
    from playhouse.pool import MaxConnectionsExceeded

    from app import contexts
    from app.config import ConfigError
    from app.errors import Problem
    contexts.register()
    args = build_parser().parse_args(argv)
    # expected failures are one line on stderr and an exit code, never a traceback
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except ConfigError as exc:
        print(f"configuration error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded) as exc:
        print(f"database error: {_one_line(exc)} (check PATRON_DATABASE_URL and that the database is up; "
              "run `patron db upgrade`)", file=sys.stderr)
        return 2
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        print(f"redis error: {_one_line(exc)} (check PATRON_REDIS_URL and that Redis is up)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe: stop quietly, and keep the interpreter's final flush from failing too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Problem as exc:
        print(f"error: {exc.code}: {exc.detail or exc.title}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback only on request
        if os.environ.get("PATRON_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (PATRON_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
