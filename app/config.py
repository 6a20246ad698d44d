"""Configuration: defaults < config file < PATRON_* environment < test_config."""
import os
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "DATABASE_URL": None,  # None -> SQLite file in the instance folder
    "REDIS_URL": None,  # None -> jobs run in-process
    "JOBS_QUEUE": "default",  # RQ queue for enqueue() and periodic jobs
    "POLICY_DIR": str(ROOT / "policies"),
    "RULES_DIR": str(ROOT / "rules"),
    "SCHEMA_DIR": str(ROOT / "schemas"),
    "TIMEZONE": "Asia/Shanghai",
    "LOG_LEVEL": "INFO",
    "TICKER": False,  # in-process ticker for periodic jobs (patron serve without Redis)
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "DB_MAX_CONNECTIONS": 32,
    "JOB_RUN_RETENTION_DAYS": 30,  # finished job_run rows kept this long
    # durable (durable_rules) | reference (pure Python, same answers; durable_rules is then never imported)
    "RULES_ENGINE": "durable",
    # the surrounding shop (orders, products, promotions, users) agents look up and act on:
    # None -> the built-in demo store; else its base URL, with SHOP_AUTH_HEADER: SHOP_AUTH_TOKEN on each call
    "SHOP_URL": None,
    "SHOP_AUTH_HEADER": "Authorization",
    "SHOP_AUTH_TOKEN": None,
    "SHOP_TIMEOUT_SECONDS": 3,   # per attempt
    "SHOP_RETRIES": 2,           # attempts after the first, with exponential back-off
    "SHOP_CACHE_SECONDS": 30,    # lookups are cached this long (actions never are)
    "SHOP_BREAKER_FAILURES": 5,  # failed attempts in a row that open the circuit breaker
    "SHOP_BREAKER_COOLDOWN_SECONDS": 30,  # open this long, then one trial call (half-open)
    # PostgreSQL: seconds to wait for a connection, a statement and a row lock before giving up
    "DB_CONNECT_TIMEOUT": 5,
    "DB_STATEMENT_TIMEOUT": 30,
    "DB_LOCK_TIMEOUT": 10,
    # webhook receivers on private/loopback/link-local addresses are refused unless this is true
    "WEBHOOK_ALLOW_PRIVATE": False,
    # keys encrypting webhook secrets at rest: Fernet keys (url-safe base64 of 32 bytes) separated by spaces or commas,
    # the first one encrypts; older ones still decrypt (rotation). None -> a key file in the instance folder
    "SECRET_KEYS": None,
    # expensive endpoints (policy validate/apply), per API key: RATE_LIMIT_BURST at once, refilled at
    # RATE_LIMIT_PER_MINUTE; counted per process (see docs/policy.md)
    "RATE_LIMIT_PER_MINUTE": 30,
    "RATE_LIMIT_BURST": 10,
    # the customer chat page (/web/chat) may start a chat for any user id typed in: the demo and the browser
    # tests. A shop starts chats with its API key (POST /v1/service/conversations) and sends the user to
    # /web/chat/<id>/enter?token=<user_token> instead.
    "CHAT_DEMO_START": False,
}

# PATRON_* environment names that are not settings: the config file path, the shell variable the docs
# use for an API key, and the test and benchmark wiring.
_ENV_NOT_SETTINGS = {"PATRON_CONFIG", "PATRON_KEY"}
_ENV_NOT_SETTINGS_PREFIXES = ("PATRON_TEST_", "PATRON_BENCH_")

# Settings whose env value must be parsed rather than taken as a string.
_INT = {"MAX_CONTENT_LENGTH", "DB_MAX_CONNECTIONS", "JOB_RUN_RETENTION_DAYS", "DB_CONNECT_TIMEOUT",
        "DB_STATEMENT_TIMEOUT", "DB_LOCK_TIMEOUT", "RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_BURST", "SHOP_RETRIES",
        "SHOP_CACHE_SECONDS", "SHOP_BREAKER_FAILURES", "SHOP_BREAKER_COOLDOWN_SECONDS"}
_INT_MIN = {"MAX_CONTENT_LENGTH": 1024, "DB_MAX_CONNECTIONS": 1, "JOB_RUN_RETENTION_DAYS": 1,
            "DB_CONNECT_TIMEOUT": 1, "DB_STATEMENT_TIMEOUT": 0, "DB_LOCK_TIMEOUT": 0,
            "RATE_LIMIT_PER_MINUTE": 1, "RATE_LIMIT_BURST": 1}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_BOOL = {"TICKER", "WEBHOOK_ALLOW_PRIVATE", "CHAT_DEMO_START"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and why."""


def _parse(key, raw):
    if key in _INT:
        if isinstance(raw, bool):
            raise ConfigError(f"PATRON_{key}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"PATRON_{key}: expected an integer, got {raw!r}") from None
    if key in _BOOL:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("1", "true", "yes", "on"):
            return True
        if str(raw).lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"PATRON_{key}: expected true/false, got {raw!r}")
    return raw


def _closest(name):
    """`` (did you mean PATRON_X?)`` for the known setting nearest to a misspelt one, else ``""``."""
    import difflib
    match = difflib.get_close_matches(name, DEFAULTS, n=1, cutoff=0.6)
    return f" (did you mean PATRON_{match[0]}?)" if match else ""


def load_config(instance_path, test_config=None, environ=None):
    """Build the effective configuration.

    Args:
        instance_path: folder for the default SQLite file and a config.yaml.
        test_config: highest-precedence overrides (tests).
        environ: environment mapping (default os.environ).

    Returns:
        dict of settings.
    """
    environ = os.environ if environ is None else environ
    cfg = dict(DEFAULTS)
    path = environ.get("PATRON_CONFIG") or os.path.join(instance_path, "config.yaml")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, value in data.items():
            name = str(key).upper()
            if name not in DEFAULTS:  # a typo would otherwise be silently ignored
                raise ConfigError(f"{path}: unknown setting {key!r}{_closest(name)}; "
                                  f"known: {', '.join(sorted(DEFAULTS))}")
            cfg[name] = _parse(name, value)
    elif environ.get("PATRON_CONFIG"):
        raise ConfigError(f"PATRON_CONFIG: file not found: {path}")
    for key, value in sorted(environ.items()):
        if not key.startswith("PATRON_") or key in _ENV_NOT_SETTINGS or key.startswith(_ENV_NOT_SETTINGS_PREFIXES):
            continue
        name = key[len("PATRON_"):]
        if name not in DEFAULTS:  # PATRON_DATABSE_URL would otherwise silently run on the SQLite default
            raise ConfigError(f"{key}: unknown setting{_closest(name)}")
        cfg[name] = _parse(name, value)
    for key, value in (test_config or {}).items():
        cfg[key] = value
    if not cfg.get("DATABASE_URL"):
        cfg["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "patron.db")
    validate(cfg)
    return cfg


def validate(cfg):
    """Fail fast, naming the setting, on anything the app could only trip over later.

    DATABASE_URL is checked when it is opened (app.db.open_database).
    """
    from urllib.parse import urlparse
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    for key, minimum in _INT_MIN.items():
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"PATRON_{key}: expected an integer >= {minimum}, got {value!r}")
    redis_url = cfg.get("REDIS_URL")
    if redis_url:
        parsed = urlparse(str(redis_url))
        if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
            raise ConfigError(f"PATRON_REDIS_URL: expected redis://host:port/db, got {redis_url!r}")
        try:
            parsed.port  # noqa: B018 - raises on a non-numeric port
        except ValueError:
            raise ConfigError(f"PATRON_REDIS_URL: bad port in {redis_url!r}") from None
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(cfg.get("JOBS_QUEUE"))):
        raise ConfigError(f"PATRON_JOBS_QUEUE: 1-64 characters of A-Z a-z 0-9 _ -, got {cfg.get('JOBS_QUEUE')!r}")
    level = str(cfg.get("LOG_LEVEL", "")).upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"PATRON_LOG_LEVEL: expected one of {', '.join(_LOG_LEVELS)}, got {cfg.get('LOG_LEVEL')!r}")
    cfg["LOG_LEVEL"] = level
    if cfg.get("RULES_ENGINE") not in ("durable", "reference"):
        raise ConfigError(f"PATRON_RULES_ENGINE: expected durable or reference, got {cfg.get('RULES_ENGINE')!r}")
    try:
        ZoneInfo(str(cfg.get("TIMEZONE")))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"PATRON_TIMEZONE: unknown time zone {cfg.get('TIMEZONE')!r} "
                          "(use an IANA name such as Asia/Shanghai)") from None
    for key in ("POLICY_DIR", "RULES_DIR", "SCHEMA_DIR"):
        if not os.path.isdir(str(cfg.get(key))):
            raise ConfigError(f"PATRON_{key}: not a directory: {cfg.get(key)!r}")
