"""Policy sets: the active set of policies/ + rules/ files, its version (content hash), activation.

INTERIM minimal implementation (to be replaced by the full engine, same interface):
    active()            -> PolicySet currently in force in this process
    active_version()    -> its version string, or None
    PolicySet.version   -> content hash (sha256 hex, first 16 chars used as short version)
    PolicySet.get(kind) -> list of documents (dicts) of that kind, in file name order
    PolicySet.one(kind) -> the single document of that kind (Problem/KeyError if absent)
"""
import hashlib
from pathlib import Path

import yaml

_active = None


class PolicySet:
    def __init__(self, files):
        """files: dict relative path -> text."""
        self.files = dict(sorted(files.items()))
        h = hashlib.sha256()
        for name, text in self.files.items():
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        self.version = h.hexdigest()[:16]
        self.documents = {}
        for name, text in self.files.items():
            doc = yaml.safe_load(text) or {}
            doc["_file"] = name
            self.documents.setdefault(doc.get("kind"), []).append(doc)

    def get(self, kind):
        return self.documents.get(kind, [])

    def one(self, kind):
        docs = self.get(kind)
        if len(docs) != 1:
            raise KeyError(f"expected one policy of kind {kind!r}, found {len(docs)}")
        return docs[0]


def read_dirs(policy_dir, rules_dir):
    files = {}
    for base, prefix in ((Path(policy_dir), "policies"), (Path(rules_dir), "rules")):
        for path in sorted(base.rglob("*.y*ml")):
            files[f"{prefix}/{path.relative_to(base).as_posix()}"] = path.read_text(encoding="utf-8")
    return files


def activate(policy_set):
    global _active
    _active = policy_set


def active():
    if _active is None:
        from flask import current_app
        activate(PolicySet(read_dirs(current_app.config["POLICY_DIR"], current_app.config["RULES_DIR"])))
    return _active


def active_version():
    return _active.version if _active else None


def startup(app, apply_from_disk=False):
    """Load the active set at process start (interim: from the configured directories)."""
    activate(PolicySet(read_dirs(app.config["POLICY_DIR"], app.config["RULES_DIR"])))
