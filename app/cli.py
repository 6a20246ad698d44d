"""The ``patron`` command: serve, db, apikey, demo, plus every group in app/commands/."""
import argparse
import json
import os
import shutil
import sys

import click
from flask.cli import AppGroup, ScriptInfo


def _app(args=None):
    from app import create_app
    overrides = {}
    if args is not None and getattr(args, "database_url", None):
        overrides["DATABASE_URL"] = args.database_url
    return create_app(overrides)


def open_app(args):
    """For a command's whole run: the app with its context pushed, this thread's connection open and the
    active policy set loaded (the process ends with the command)."""
    from app import policy
    from app.db import db
    app = _app(args)
    app.app_context().push()
    db.connect(reuse_if_open=True)
    policy.startup(app)
    return app


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
    rc = 1 if st["pending"] or problems or st["unknown"] else 0
    if args.json:
        echo_json({"applied": st["applied"], "pending": st["pending"], "unknown": st["unknown"],
                   "drift": problems, "clean": rc == 0})
        return rc
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
    return rc


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


# ---- click wiring (through Flask's CLI: AppGroup + ScriptInfo) ----------------------------------------

def _script_info(database_url):
    return ScriptInfo(create_app=lambda: _app(argparse.Namespace(database_url=database_url)), set_debug_flag=False)


def json_option():
    """``--json``: every read command prints machine-readable JSON on stdout with it."""
    return click.Option(["--json"], is_flag=True, help="print JSON on stdout")


class ReaderGone(Exception):
    """The reader of our output went away (``patron ... | head``). Not an OSError, so click's own EPIPE
    handling (exit 1) lets it through to ``main``, which exits 141 quietly as shells expect."""


def run_quietly_on_a_closed_pipe(fn, args):
    """``fn(args)``, a BrokenPipeError turned into ReaderGone (every command callback runs through here)."""
    try:
        return fn(args)
    except BrokenPipeError as exc:
        raise ReaderGone() from exc


def command(group, name, func, *params, kind, help=None):
    """Add ``func(args)`` to a click group as ``name``.

    Args:
        group: the click group.
        name: the command name.
        func: ``func(args) -> exit code``; ``args`` is a namespace of the parameters plus ``database_url``.
        params: ``click.Option`` / ``click.Argument`` objects.
        kind: ``"read"`` (must take ``--json``: a test runs it and parses the output), ``"write"``, or
            ``"tool"`` (prints a script for the shell, not data).
        help: one line (default: the first line of func's docstring).
    """
    if kind not in ("read", "write", "tool"):
        raise ValueError(f"{name}: kind is 'read', 'write' or 'tool'")
    if kind == "read" and not any(p.name == "json" for p in params):
        raise ValueError(f"{name}: a read command takes --json (add json_option())")

    def callback(**kwargs):
        root = click.get_current_context().find_root()
        kwargs.setdefault("database_url", root.params.get("database_url"))
        return run_quietly_on_a_closed_pipe(func, argparse.Namespace(**kwargs))

    doc = help or (func.__doc__ or "").strip().split("\n")[0]
    cmd = click.Command(name, params=list(params), callback=callback, help=doc, short_help=doc)
    cmd.kind = kind
    group.add_command(cmd)
    return cmd


def group(parent, name, help, **kwargs):
    """A sub-group of commands (``patron NAME ...``)."""
    grp = AppGroup(name, help=help, short_help=help, **kwargs)
    parent.add_command(grp)
    return grp


def echo_json(obj):
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def status_word(ok, good="OK", bad="FAILED"):
    """A status word, green or red on a terminal (click strips the colour when the output is not one)."""
    return click.style(good if ok else bad, fg="green" if ok else "red", bold=True if not ok else None)


class Progress:
    """``progress(done, total)`` drawing a click progress bar on stderr, only when stderr is a terminal and the
    command was not asked for ``--json`` (``quiet``): the one progress bar of every long command."""

    def __init__(self, label, quiet=False):
        self.label = label
        self.quiet = quiet
        self.bar = None
        self.done = 0

    def __call__(self, done, total):
        if self.quiet or not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr,
                                         show_pos=True, show_eta=True)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def cmd_completion(args):
    """Print the shell completion script (bash, zsh or fish): eval "$(patron completion bash)"."""
    from click.shell_completion import get_completion_class
    cls = get_completion_class(args.shell)
    click.echo(cls(build_cli(), {}, "patron", "_PATRON_COMPLETE").source())
    return 0


def build_cli():
    """The ``patron`` click group with every command group, listed."""
    @click.group("patron", cls=AppGroup, help="Patron platform command line",
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.option("--database-url", help="override PATRON_DATABASE_URL")
    @click.pass_context
    def root(ctx, database_url):
        ctx.obj = _script_info(database_url)  # flask.cli.with_appcontext finds the app through it

    command(root, "serve", cmd_serve,
            click.Option(["--host"], default="127.0.0.1", show_default=True),
            click.Option(["--port"], type=int, default=8000, show_default=True),
            click.Option(["--workers"], type=int, default=None, help="default: 1 without Redis, else 2*CPU+1"),
            click.Option(["--threads"], type=int, default=8, show_default=True),
            click.Option(["--dev"], is_flag=True, help="Werkzeug development server"),
            kind="write", help="serve the HTTP API")
    command(root, "demo", cmd_demo, click.Option(["--port"], type=int, default=8000, show_default=True),
            kind="write", help="upgrade the database, load sample policies and data, print the demo key")
    command(root, "completion", cmd_completion,
            click.Argument(["shell"], type=click.Choice(["bash", "zsh", "fish"])),
            kind="tool", help="print the shell completion script: eval \"$(patron completion bash)\"")

    dbg = group(root, "db", "database schema")
    command(dbg, "upgrade", cmd_db_upgrade, kind="write", help="apply pending migrations")
    command(dbg, "status", cmd_db_status, json_option(), kind="read",
            help="applied and pending migrations, drift from the models (exit 1 unless clean)")

    kg = group(root, "apikey", "API keys")
    command(kg, "create", cmd_apikey_create, click.Option(["--name"], required=True),
            click.Option(["--scopes"], required=True, help="comma separated, e.g. ledger:write,policy:read"),
            kind="write", help="create a key (printed once)")
    command(kg, "list", cmd_apikey_list, json_option(), kind="read", help="list keys (never their secrets)")
    command(kg, "revoke", cmd_apikey_revoke, click.Argument(["key_id"]), kind="write", help="revoke a key by id")

    from app.commands import calendar, keys, ledger, membership, policy, simulation, staff, stats, worker
    for module in (calendar, keys, ledger, membership, policy, simulation, staff, stats, worker):  # every group
        module.register(root)
    return root


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
    # expected failures are one line on stderr and an exit code, never a traceback
    try:
        try:
            rc = build_cli().main(args=argv, prog_name="patron", standalone_mode=False)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help(), err=True)
            return 2
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "patron"
            print(f"usage error: {_one_line(exc.format_message())} (see `{where} --help`)", file=sys.stderr)
            return exc.exit_code
        except click.ClickException as exc:
            print(f"error: {_one_line(exc.format_message())}", file=sys.stderr)
            return exc.exit_code
        except click.Abort:
            raise KeyboardInterrupt from None
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
    except (BrokenPipeError, ReaderGone):
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
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
