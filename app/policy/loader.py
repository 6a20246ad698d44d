"""YAML loading for policy files: marks, no duplicate keys, YAML 1.1 surprises kept as strings, limits."""
import re

import yaml

from app.policy.errors import PolicyError

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 200_000

# YAML 1.2 booleans only: yes/no/on/off (YAML 1.1) stay strings, as do bare dates/timestamps.
_BOOL_12 = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """SafeLoader that only composes nodes; construction is ours (see _build)."""


class Marks(dict):
    """path tuple -> (line, col) of the value (1-based); ``keys`` has the marks of mapping keys."""

    def __init__(self):
        super().__init__()
        self.keys = {}

    def locate(self, path):
        """(line, col) of the deepest known node along ``path``."""
        path = tuple(path)
        while path:
            if path in self:
                return self[path]
            path = path[:-1]
        return self.get((), (1, 1))


class _Builder:
    def __init__(self, loader, filename):
        self.loader = loader
        self.filename = filename
        self.marks = Marks()
        self.errors = []
        self.count = 0

    def error(self, node, path, message, validator="yaml"):
        self.errors.append(PolicyError(self.filename, path, message, validator,
                                       node.start_mark.line + 1, node.start_mark.column + 1))

    def build(self, node, path=(), depth=0):
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node, f"more than {MAX_NODES} YAML nodes (alias expansion?)")
        if depth > MAX_DEPTH:
            raise _TooBig(node, f"nesting deeper than {MAX_DEPTH} levels")
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.error(key_node, path, "mapping keys must be plain scalars")
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.error(key_node, path, "merge keys (<<) are not supported in policy files")
                    continue
                key = key_node.value  # keys are strings, as in JSON
                if key in out:
                    first = self.marks.keys.get(path + (key,))
                    where = f" (first at line {first[0]})" if first else ""
                    self.error(key_node, path + (key,), f"duplicate key {key!r}{where}", "duplicate-key")
                    continue
                self.marks.keys[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self.build(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node, path):
        tag = node.tag
        if tag == "tag:yaml.org,2002:bool":
            if node.value in _BOOL_12:
                return _BOOL_12[node.value]
            return node.value  # yes/no/on/off: a string, never a surprise boolean
        if tag == "tag:yaml.org,2002:timestamp":
            return node.value  # a bare date stays the text the operator wrote
        if tag == "tag:yaml.org,2002:str":
            return node.value
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == _INT_TAG:
            # YAML 1.1 octal/sexagesimal/underscored ints are surprises too: only plain decimals are numbers
            if not re.fullmatch(r"[-+]?(0|[1-9][0-9]*)", node.value):
                return node.value
            return int(node.value)
        if tag == _FLOAT_TAG:
            if not re.fullmatch(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?", node.value):
                self.error(node, path, f"{node.value!r}: .inf/.nan and sexagesimal numbers are not allowed")
                return None
            return float(node.value)
        self.error(node, path, f"unsupported YAML tag {tag!r} (policy files hold plain data only)")
        return None


class _TooBig(Exception):
    def __init__(self, node, message):
        super().__init__(message)
        self.node = node


def load(text, filename="-"):
    """Parse one policy file.

    Args:
        text: the YAML text.
        filename: used in error messages.

    Returns:
        (document or None, Marks, [PolicyError]): every problem found, each with line:col.
    """
    marks = Marks()
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return None, marks, [PolicyError(filename, "$", f"file larger than {MAX_FILE_BYTES} bytes", "size", 1, 1)]
    try:
        # PyYAML's reader rejects control characters and lone surrogates while constructing the loader
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        return None, marks, [PolicyError(filename, "$", str(exc).replace("\n", " "), "yaml", 1, 1)]
    try:
        if not loader.check_node():
            return None, marks, [PolicyError(filename, "$", "empty file", "yaml", 1, 1)]
        node = loader.get_node()
        if loader.check_node():
            extra = loader.get_node()
            m = extra.start_mark
            return None, marks, [PolicyError(filename, "$", "one YAML document per file", "yaml",
                                             m.line + 1, m.column + 1)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        return None, marks, [PolicyError(filename, "$", msg or str(exc), "yaml",
                                         (mark.line + 1) if mark else 0, (mark.column + 1) if mark else 0)]
    except yaml.YAMLError as exc:
        return None, marks, [PolicyError(filename, "$", str(exc), "yaml", 1, 1)]
    finally:
        loader.dispose()
    builder = _Builder(loader, filename)
    try:
        doc = builder.build(node)
    except _TooBig as exc:
        m = exc.node.start_mark
        return None, builder.marks, [PolicyError(filename, "$", str(exc), "size", m.line + 1, m.column + 1)]
    except RecursionError:
        return None, builder.marks, [PolicyError(filename, "$", "nesting too deep", "size", 1, 1)]
    return doc, builder.marks, builder.errors


def path_from_string(text):
    """Best-effort parse of ``$.a.b[0]['x y']`` into ('a', 'b', 0, 'x y')."""
    parts = []
    for m in re.finditer(r"\.([^.\[\]]+)|\[(\d+)\]|\[(['\"])(.*?)\3\]", text.lstrip("$")):
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(m.group(4))
    return tuple(parts)
