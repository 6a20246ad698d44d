"""Semantic diff of two policy sets, per kind: what was added, removed or changed, and where."""
import collections
import json
import threading

from app.policy.sets import PolicySet, content_hash

# keys that identify an item in a list of mappings (tiers, rules, caps ...), in preference order
ID_KEYS = ("name", "code", "id", "key", "level", "tier", "event", "type")


def _fmt(v):
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _label(item):
    for k in ID_KEYS:
        if isinstance(item, dict) and isinstance(item.get(k), (str, int)) and not isinstance(item.get(k), bool):
            return k, item[k]
    return None, None


def _keyed(items):
    """{label: item} if every item of the list has a distinct identifying key, else None."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    key = _label(items[0])[0]
    if key is None or not all(isinstance(i.get(key), (str, int)) for i in items):
        return None
    out = {}
    for i in items:
        if i[key] in out:
            return None
        out[i[key]] = i
    return out


def _walk(a, b, path, out):
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        _walk_keys(a, b, lambda k: f"{path}.{k}", out)
        return
    if isinstance(a, list) and isinstance(b, list):
        ka, kb = _keyed(a), _keyed(b)
        if ka is not None and kb is not None:
            _walk_keys(ka, kb, lambda k: f"{path}[{k}]", out)
            if [x for x in ka if x in kb] != [x for x in kb if x in ka]:
                out.append(("changed", f"{path} (order)", list(ka), list(kb)))
            return
    out.append(("changed", path, a, b))


def _walk_keys(a, b, where, out):
    """Compare two mappings key by key (``where(key)`` names a key's path)."""
    for k in a:
        if k not in b:
            out.append(("removed", where(k), a[k], None))
    for k in b:
        if k not in a:
            out.append(("added", where(k), None, b[k]))
        else:
            _walk(a[k], b[k], where(k), out)


def _docs(ps):
    """(kind, identity) -> document without _file."""
    out = {}
    for kind, docs in ps.documents.items():
        for d in docs:
            ident = d.get("name") if isinstance(d.get("name"), str) else d["_file"]
            out[(str(kind), ident)] = ({k: v for k, v in d.items() if k != "_file"}, d["_file"])
    return out


# Parsed documents of the last few sets diffed, by content hash (a version never changes its content): the
# operators' diff page compares the same versions again and again, and parsing YAML with marks is the cost.
_PARSED = collections.OrderedDict()
_PARSED_MAX = 8
_PARSED_LOCK = threading.Lock()


def _parsed(files):
    key = content_hash(dict(sorted(files.items())))
    with _PARSED_LOCK:
        hit = _PARSED.get(key)
        if hit is not None:
            _PARSED.move_to_end(key)
            return hit
    docs = _docs(PolicySet(files))
    with _PARSED_LOCK:
        _PARSED[key] = docs
        while len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return docs


def diff(files_a, files_b):
    """Changes from set A to set B.

    Returns:
        list of dicts {kind, name, file, change: added|removed|changed, path, old, new}; rulesets are
        compared rule by rule (by rule name), other kinds key lists of mappings by name/code/id.
    """
    a, b = _parsed(files_a), _parsed(files_b)
    out = []
    for key in sorted(set(a) | set(b), key=lambda k: (k[0], str(k[1]))):
        kind, ident = key
        if key not in b:
            out.append({"kind": kind, "name": ident, "file": a[key][1], "change": "removed", "path": "$",
                        "old": None, "new": None})
            continue
        if key not in a:
            out.append({"kind": kind, "name": ident, "file": b[key][1], "change": "added", "path": "$",
                        "old": None, "new": None})
            continue
        changes = []
        _walk(a[key][0], b[key][0], "$", changes)
        for change, path, old, new in changes:
            out.append({"kind": kind, "name": ident, "file": b[key][1], "change": change, "path": path,
                        "old": old, "new": new})
    return out


def render(changes):
    """One line per change, e.g. ``ruleset ticket_routing: changed $.rules[vip].priority: 45 -> 50``."""
    lines = []
    for c in changes:
        head = f"{c['kind']} {c['name']}: {c['change']} {c['path']}"
        if c["change"] == "changed":
            head += f": {_fmt(c['old'])} -> {_fmt(c['new'])}"
        elif c["path"] != "$":
            head += f": {_fmt(c['new'] if c['change'] == 'added' else c['old'])}"
        lines.append(head)
    return lines
