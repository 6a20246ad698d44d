"""Configuration: defaults < config file < PATRON_* environment < test_config."""
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "DATABASE_URL": None,  # None -> SQLite file in the instance folder
    "REDIS_URL": None,  # None -> jobs run in-process
    "POLICY_DIR": str(ROOT / "policies"),
    "RULES_DIR": str(ROOT / "rules"),
    "SCHEMA_DIR": str(ROOT / "schemas"),
    "TIMEZONE": "Asia/Shanghai",
    "LOG_LEVEL": "INFO",
    "TICKER": False,  # in-process ticker for periodic jobs (patron serve without Redis)
    "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    "DB_MAX_CONNECTIONS": 32,
}

# Settings whose env value must be parsed rather than taken as a string.
_INT = {"MAX_CONTENT_LENGTH", "DB_MAX_CONNECTIONS"}
_BOOL = {"TICKER"}


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and why."""


def _parse(key, raw):
    if key in _INT:
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
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, value in data.items():
            cfg[str(key).upper()] = _parse(str(key).upper(), value)
    elif environ.get("PATRON_CONFIG"):
        raise ConfigError(f"PATRON_CONFIG: file not found: {path}")
    for key, value in environ.items():
        if key.startswith("PATRON_") and key != "PATRON_CONFIG":
            cfg[key[len("PATRON_"):]] = _parse(key[len("PATRON_"):], value)
    for key, value in (test_config or {}).items():
        cfg[key] = value
    if not cfg.get("DATABASE_URL"):
        cfg["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "patron.db")
    return cfg
