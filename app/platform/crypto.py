"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under keys from configuration, rotation by key list."""
import os
import re
import threading

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import ConfigError

PREFIX = "fernet:"
KEY_FILE = "secret.key"

_lock = threading.Lock()
_box = None


def _parse_keys(raw):
    keys = [k for k in re.split(r"[\s,]+", str(raw or "")) if k]
    out = []
    for k in keys:
        try:
            out.append(Fernet(k.encode()))
        except (ValueError, TypeError):
            raise ConfigError("PATRON_SECRET_KEYS: each key is 32 url-safe base64 bytes "
                              "(make one with `patron secrets new-key`)") from None
    return out


def _key_file(instance_path):
    """The embedded default's key: made once in the instance folder (mode 0600), reused ever after."""
    path = os.path.join(instance_path, KEY_FILE)
    if not os.path.exists(path):
        os.makedirs(instance_path, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(Fernet.generate_key().decode() + "\n")
    with open(path, encoding="ascii") as fh:
        return fh.read()


def configure(secret_keys, instance_path, app=None):
    """Set the keys: ``SECRET_KEYS`` (first encrypts, all decrypt), else a key file in the instance folder.

    With ``app``, the keys are that app's (used inside its app context); the last configured keys
    also serve code running outside any app context.

    Raises:
        ConfigError: a malformed key.
    """
    global _box
    keys = _parse_keys(secret_keys) if secret_keys else _parse_keys(_key_file(instance_path))
    if not keys:
        raise ConfigError("PATRON_SECRET_KEYS: no key given")
    box = MultiFernet(keys)
    with _lock:
        _box = box
        if app is not None:
            app.extensions["patron.crypto"] = box


def new_key():
    return Fernet.generate_key().decode()


def _current():
    from flask import current_app, has_app_context
    if has_app_context():
        box = current_app.extensions.get("patron.crypto")
        if box is not None:
            return box
    if _box is None:
        raise RuntimeError("app.platform.crypto.configure() was not called (create_app does it)")
    return _box


def encrypt(text):
    """``fernet:<token>`` of a text, under the first configured key."""
    return PREFIX + _current().encrypt(text.encode("utf-8")).decode("ascii")


def decrypt(stored):
    """The text of an ``encrypt`` result, under any configured key.

    Raises:
        ValueError: not encrypted, or by none of the configured keys.
    """
    if not isinstance(stored, str) or not stored.startswith(PREFIX):
        raise ValueError("not an encrypted value")
    try:
        return _current().decrypt(stored[len(PREFIX):].encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise ValueError("encrypted under none of the configured keys (PATRON_SECRET_KEYS)") from None


def is_encrypted(stored):
    return isinstance(stored, str) and stored.startswith(PREFIX)


def rotate(stored):
    """The same secret re-encrypted under the first key (a plain legacy value is encrypted)."""
    if not is_encrypted(stored):
        return encrypt(stored)
    try:
        return PREFIX + _current().rotate(stored[len(PREFIX):].encode("ascii")).decode("ascii")
    except InvalidToken:
        raise ValueError("encrypted under none of the configured keys (PATRON_SECRET_KEYS)") from None
