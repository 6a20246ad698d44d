"""Policy sets: parsing every file, content hash (= version), validation, cross-checks, examples."""
import hashlib
import logging
import re
from pathlib import Path

from app import engine
from app.engine import actions
from app.policy import kinds, loader
from app.policy.errors import PolicyError
from app.schemas import validator

log = logging.getLogger(__name__)

MAX_FILES = 2000
MAX_TOTAL_BYTES = 16 * 1024 * 1024
FILE_RE = re.compile(r"^(policies|rules)/([A-Za-z0-9_\-]+/)*[A-Za-z0-9_\-.]+\.ya?ml$")


def content_hash(files):
    h = hashlib.sha256()
    for name, text in sorted(files.items()):
        h.update(name.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def read_dirs(policy_dir, rules_dir):
    """{"policies/x.yaml": text, "rules/y.yaml": text} from two folders (missing folder = no files)."""
    files = {}
    for base, prefix in ((Path(policy_dir), "policies"), (Path(rules_dir), "rules")):
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.y*ml")):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                files[f"{prefix}/{path.relative_to(base).as_posix()}"] = path.read_text(encoding="utf-8")
    return files


def read_root(root):
    """The files of a folder holding ``policies/`` and ``rules/``."""
    root = Path(root)
    return read_dirs(root / "policies", root / "rules")


class PolicySet:
    """All policy and ruleset files together; ``version`` is their content hash.

    Parsing never raises: problems are kept in ``load_errors`` (``validate()`` reports them all).
    """

    def __init__(self, files, budget=None):
        self.files = dict(sorted(files.items()))
        self.version = content_hash(self.files)
        self.documents = {}
        self.marks = {}
        self.load_errors = []
        self.budget_exhausted = False
        self._rulesets = {}
        budget = self.budget = budget or loader.Budget()
        for name, text in self.files.items():
            try:
                doc, marks, errs = loader.load(text, name, budget)
            except loader.BudgetExhausted as exc:
                file, line, col = getattr(exc, "where", (name, 1, 1))
                self.load_errors.append(PolicyError(file, "$", f"{exc}; nothing after this point was read",
                                                    "size", line, col))
                self.budget_exhausted = True
                break
            self.marks[name] = marks
            self.load_errors.extend(errs)
            if doc is None:
                continue
            if not isinstance(doc, dict):
                self.load_errors.append(PolicyError(name, "$", "a policy file must be a mapping", "type", 1, 1))
                continue
            doc["_file"] = name
            kind = doc.get("kind")
            if isinstance(kind, str) and kinds.current_name(kind) != kind:
                kind = doc["kind"] = kinds.current_name(kind)  # a renamed kind, e.g. assets -> ledger
            self.documents.setdefault(kind if isinstance(kind, str) else None, []).append(doc)
            if kind == "ruleset" and isinstance(doc.get("name"), str):
                self._rulesets.setdefault(doc["name"], doc)

    def get(self, kind):
        """Parsed documents of that kind, in file order (each has ``_file``)."""
        return self.documents.get(kind, [])

    def one(self, kind):
        """The single document of that kind (KeyError if there is not exactly one)."""
        docs = self.get(kind)
        if len(docs) != 1:
            raise KeyError(f"expected one policy of kind {kind!r}, found {len(docs)}")
        return docs[0]

    def ruleset(self, name):
        """The ruleset document named ``name`` (KeyError if absent)."""
        return self._rulesets[name]

    def kinds(self):
        return sorted(k for k in self.documents if k)

    def locate(self, file, path):
        """(line, col) of a path tuple (or ``$.a.b`` string) in a file; (0, 0) if unknown."""
        marks = self.marks.get(file)
        if marks is None:
            return 0, 0
        if isinstance(path, str):
            path = loader.path_from_string(path)
        return marks.locate(path)

    def error(self, file, path, message, validator="policy"):
        line, col = self.locate(file, path)
        return PolicyError(file, path, message, validator, line, col)


def discover():
    """Errors when no context has registered its kinds (call ``app.contexts.register()`` at start-up)."""
    if kinds.registered():
        return []
    return [PolicyError("-", "$", "no context registered its policy kinds (app.contexts.register() was not called)",
                        "plugin")]


def _schema_errors(ps, doc, known):
    file = doc["_file"]
    kind = doc.get("kind")
    out = []
    if not isinstance(kind, str):
        out.append(ps.error(file, (), "missing 'kind' (every policy file declares its kind)", "required"))
        return out, False
    if "version" not in doc:
        out.append(ps.error(file, (), "missing 'version' (every policy file declares its version)", "required"))
    if kind not in known:
        out.append(ps.error(file, ("kind",), f"unknown kind {kind!r} (known: {', '.join(known)})", "kind"))
        return out, False
    body = {k: v for k, v in doc.items() if k != "_file"}
    marks = ps.marks[file]
    for err in validator(f"policies/{kind}.json").iter_errors(body):
        path = tuple(err.absolute_path)
        line, col = marks.locate(path)
        if err.validator == "additionalProperties":
            # point at the unexpected key, not at the mapping that holds it
            for extra in re.findall(r"'([^']+)'", err.message):
                if path + (extra,) in marks.keys:
                    line, col = marks.keys[path + (extra,)]
                    path = path + (extra,)
                    break
        out.append(PolicyError(file, path, err.message, str(err.validator), line, col))
    return out, not out


def _normalise(ps, kind, item, file=None):
    """A cross-check result item (PolicyError, "file: $.path: msg", "$.path: msg", tuple) -> PolicyError."""
    if file is None:
        docs = ps.get(kind)
        file = docs[0]["_file"] if docs else "-"
    if isinstance(item, PolicyError):
        if item.file in ("-", None, ""):
            item.file = file
        if not item.line and item.file in ps.marks:
            item.line, item.col = ps.locate(item.file, item.path)
        return item
    if isinstance(item, (tuple, list)) and len(item) >= 3:
        return ps.error(item[0] or file, item[1] or "$", str(item[2]), "cross-check")
    text = str(item)
    m = re.match(r"^(?P<file>[^:\s]+\.ya?ml)(?::\d+(?::\d+)?)?:\s*(?P<path>\$\S*):\s*(?P<msg>.*)$", text)
    if m:
        return ps.error(m["file"], m["path"], m["msg"], "cross-check")
    m = re.match(r"^(?P<path>\$\S*):\s*(?P<msg>.*)$", text)
    if m:
        return ps.error(file, m["path"], m["msg"], "cross-check")
    return ps.error(file, "$", text, "cross-check")


def _run_cross_checks(ps, valid_kinds):
    out = []
    for kind, fns in kinds.registered().items():
        if kind not in valid_kinds:
            continue  # schema errors already reported; checks may assume schema-valid documents
        for fn in fns:
            name = getattr(fn, "__qualname__", repr(fn))
            try:
                try:
                    items = [(None, i) for i in (fn(ps) or ())]
                except (AttributeError, TypeError):
                    # tolerate checks written for one document of their kind instead of the set
                    items = [(doc["_file"], i) for doc in ps.get(kind) for i in (fn(doc) or ())]
            except Exception as exc:  # noqa: BLE001 - a crashing check is a reported error, never a 500
                log.exception("cross-check %s failed", name)
                items = [(None, f"$: cross-check {name} crashed: {exc!r}")]
            out.extend(_normalise(ps, kind, i, f) for f, i in items)
    return out


def _ruleset_errors(ps, docs):
    """Names unique, actions whitelisted with valid parameters; tolerant of schema-invalid documents."""
    out = []
    seen = {}
    for doc in docs:
        file = doc["_file"]
        name = doc.get("name")
        if isinstance(name, str):
            if name in seen:
                out.append(ps.error(file, ("name",), f"ruleset name {name!r} is already used by {seen[name]}",
                                    "unique"))
            else:
                seen[name] = file
        rules = doc.get("rules") if isinstance(doc.get("rules"), list) else []
        rule_names = {}
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            rname = rule.get("name")
            if isinstance(rname, str) and rname in rule_names:
                out.append(ps.error(file, ("rules", i, "name"),
                                    f"rule name {rname!r} repeats rules[{rule_names[rname]}]", "unique"))
            elif isinstance(rname, str):
                rule_names[rname] = i
            then = rule.get("then") if isinstance(rule.get("then"), list) else []
            for j, act in enumerate(then):
                if not isinstance(act, dict) or not isinstance(act.get("action"), str):
                    continue
                for sub, message, validator in actions.errors(act):
                    if sub == ("action",):
                        path = ("rules", i, "then", j, "action")
                    else:
                        path = ("rules", i, "then", j) + (sub if sub else ())
                    out.append(ps.error(file, path, message, validator))
    return out


def _example_errors(ps, doc):
    out = []
    file = doc["_file"]
    for k, ex in enumerate(doc.get("examples") or ()):
        label = ex.get("name") or f"#{k}"
        ref = engine.evaluate(doc["name"], ex["input"], policy_set=ps, engine="reference")
        # durable_rules runs the example too when it is the selected engine (it is not loaded otherwise)
        dur = engine.evaluate(doc["name"], ex["input"], policy_set=ps, engine="durable") \
            if engine.DEFAULT_ENGINE == "durable" else ref
        if [m.rule for m in ref.matches] != [m.rule for m in dur.matches]:
            out.append(ps.error(file, ("examples", k), f"example {label!r}: engines disagree: reference "
                                f"{[m.rule for m in ref.matches]}, durable_rules {[m.rule for m in dur.matches]}",
                                "engine"))
        expect = ex["expect"]
        if "rule" in expect and expect["rule"] != ref.rule:
            out.append(ps.error(file, ("examples", k, "expect", "rule"),
                                f"example {label!r}: expected rule {expect['rule']!r}, got {ref.rule!r}", "example"))
        if "rules" in expect and expect["rules"] != [m.rule for m in ref.matches]:
            out.append(ps.error(file, ("examples", k, "expect", "rules"),
                                f"example {label!r}: expected rules {expect['rules']}, got "
                                f"{[m.rule for m in ref.matches]}", "example"))
        if "actions" in expect and expect["actions"] != ref.actions():
            out.append(ps.error(file, ("examples", k, "expect", "actions"),
                                f"example {label!r}: expected actions {expect['actions']}, got {ref.actions()}",
                                "example"))
    return out


def validate(ps):
    """Every error of a policy set: YAML, schema, cross-file checks, compilation, embedded examples.

    Args:
        ps: a PolicySet.

    Returns:
        list of PolicyError, sorted by file, line, column (empty = valid).
    """
    errors = list(ps.load_errors)
    if ps.budget_exhausted:  # a set too costly to read is not worth checking further
        return sorted(errors, key=lambda e: (e.file, e.line, e.col))

    def over_budget(where):
        # the same CPU allowance as parsing: a set that is cheap to read but costly to check stops too
        if not ps.budget.over():
            return False
        errors.append(PolicyError(where, "$", f"{ps.budget.exhausted}; stopped checking here", "size", 1, 1))
        return True
    if not ps.files:
        errors.append(PolicyError("-", "$", "a policy set needs at least one file", "required"))
    if len(ps.files) > MAX_FILES:
        errors.append(PolicyError("-", "$", f"more than {MAX_FILES} files", "size"))
    if sum(len(t) for t in ps.files.values()) > MAX_TOTAL_BYTES:
        errors.append(PolicyError("-", "$", f"policy set larger than {MAX_TOTAL_BYTES} bytes", "size"))
    for name in ps.files:
        if not FILE_RE.match(name) or ".." in name.split("/"):
            errors.append(PolicyError(name, "$", "file names look like policies/<name>.yaml or rules/<name>.yaml",
                                      "file-name"))
    errors.extend(discover())
    known = kinds.known_kinds()
    valid_kinds = set()
    bad_kinds = set()
    valid_rulesets = []
    for kind, docs in ps.documents.items():
        for doc in docs:
            if over_budget(doc["_file"]):
                return sorted(errors, key=lambda e: (e.file, e.line, e.col, e.path, e.message))
            errs, ok = _schema_errors(ps, doc, known)
            errors.extend(errs)
            if ok and kind == "ruleset":
                valid_rulesets.append(doc)
            if not ok:
                bad_kinds.add(kind)
            elif kind:
                valid_kinds.add(kind)
            if kind == "ruleset" and not doc["_file"].startswith("rules/"):
                errors.append(ps.error(doc["_file"], ("kind",), "rulesets live under rules/", "kind"))
    valid_kinds -= bad_kinds
    if over_budget("-"):
        return sorted(errors, key=lambda e: (e.file, e.line, e.col, e.path, e.message))
    if not any(e.file.startswith("app/") for e in errors):
        errors.extend(_run_cross_checks(ps, valid_kinds))
    rs_errors = _ruleset_errors(ps, ps.get("ruleset"))
    errors.extend(rs_errors)
    if not rs_errors:
        for doc in valid_rulesets:
            if over_budget(doc["_file"]):
                break
            try:
                engine.compiled(doc)
            except Exception as exc:  # noqa: BLE001 - compile failure is a reported error
                errors.append(ps.error(doc["_file"], ("rules",), f"cannot compile: {exc}", "compile"))
                continue
            errors.extend(_example_errors(ps, doc))
    return sorted(errors, key=lambda e: (e.file, e.line, e.col, e.path, e.message))
