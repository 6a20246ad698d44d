"""Patron: policy-driven customer-service, account and membership platform."""
import os

from flask import Flask, request

NO_DATABASE_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics"})


def create_app(test_config=None):
    """Build the Flask app: wiring only (config, database, error handlers, blueprints)."""
    from app import logs
    from app.api import ops
    from app import contexts
    from app.api import (audit, auth, knowledge, ledger, membership, policy, service, service_ops, simulation, staff,
                         tickets)
    from app import engine
    from app.config import ConfigError, load_config
    from app.db import db, open_database
    from app.errors import register_error_handlers
    from app.platform import crypto
    from app.web import agent as web_agent, base as web_base, chat as web_chat, signin as web_signin
    from app.web import operations as web_operations, operator as web_operator, supervisor as web_supervisor

    # INSTANCE_PATH (tests, tools): a folder of their own instead of ./instance and its config.yaml
    app = Flask(__name__, instance_path=(test_config or {}).get("INSTANCE_PATH"), instance_relative_config=True)
    from app.api import Int64Converter
    app.url_map.converters["int"] = Int64Converter
    os.makedirs(app.instance_path, exist_ok=True)
    cfg = load_config(app.instance_path, test_config)
    app.config.update(cfg)
    app.config["MAX_CONTENT_LENGTH"] = cfg["MAX_CONTENT_LENGTH"]
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    logs.configure(cfg["LOG_LEVEL"])
    try:
        engine.configure(cfg["RULES_ENGINE"])
    except ValueError as exc:
        raise ConfigError(f"PATRON_RULES_ENGINE: {exc}") from None
    open_database(cfg["DATABASE_URL"], cfg["DB_MAX_CONNECTIONS"], timeouts=(
        cfg["DB_CONNECT_TIMEOUT"], cfg["DB_STATEMENT_TIMEOUT"], cfg["DB_LOCK_TIMEOUT"]))
    crypto.configure(cfg["SECRET_KEYS"], app.instance_path, app)

    def open_connection():
        # /healthz, /readyz and /metrics never wait for the database's connection (readyz checks it
        # itself, with a deadline): a stalled database must not take liveness down with it
        if request.endpoint not in NO_DATABASE_ENDPOINTS:
            db.connect(reuse_if_open=True)

    def close_connection(exc):
        if not db.is_closed():
            db.close()

    from app.api import check_request_text
    app.before_request(check_request_text)  # first: hostile text never reaches auth or the database
    app.before_request(open_connection)
    app.teardown_request(close_connection)
    logs.install_request_logging(app)
    register_error_handlers(app)
    app.register_blueprint(ops.bp)
    for module in (auth, audit, ledger, membership, policy, service, service_ops, simulation, staff, tickets,
                   knowledge):  # every blueprint, listed
        app.register_blueprint(module.bp)
    web_base.init_app(app)
    for module in (web_signin, web_chat, web_agent, web_supervisor, web_operations, web_operator):  # the web workspace's blueprints, listed
        app.register_blueprint(module.bp)
    contexts.register()
    return app
