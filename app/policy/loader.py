"""YAML loading for policy files: marks, no duplicate keys, YAML 1.1 surprises kept as strings, limits."""
import re
import time

import yaml

from app.policy.errors import PolicyError

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 200_000

# YAML 1.2 booleans only: yes/no/on/off (YAML 1.1) stay strings, as do bare dates/timestamps.
_BOOL_12 = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class Budget:
    """What parsing one policy set (one validate/apply request: every file together) may cost.

    Checked while scanning and composing, not after: a file of aliases ("billion laughs") or a huge
    flat file stops at the limit instead of after minutes of CPU.
    """
    NODES = 100_000  # YAML nodes built, aliases expanded, across all files
    ALIASES = 2_000  # alias references, across all files
    BYTES = 4 * 1024 * 1024  # UTF-8 bytes of all files
    SECONDS = 1.5  # CPU time of the checking thread: parsing every file, then validating the set
    # (CPU, not wall: a busy host must not turn a normal set into a refused one)

    def __init__(self, nodes=None, aliases=None, nbytes=None, seconds=None):
        self.nodes = self.NODES if nodes is None else nodes
        self.aliases = self.ALIASES if aliases is None else aliases
        self.bytes = self.BYTES if nbytes is None else nbytes
        self.seconds = self.SECONDS if seconds is None else seconds
        self.deadline = None
        self.exhausted = None  # the reason, once a limit was hit

    def start(self):
        if self.deadline is None:
            self.deadline = time.thread_time() + self.seconds

    def spend(self, nodes=0, aliases=0, nbytes=0):
        """Charge the budget; raises BudgetExhausted past any limit (and for every later charge)."""
        if self.exhausted:
            raise BudgetExhausted(self.exhausted)
        self.nodes -= nodes
        self.aliases -= aliases
        self.bytes -= nbytes
        if self.nodes < 0:
            self.exhausted = f"more than {self.NODES} YAML nodes in the policy set (alias expansion?)"
        elif self.aliases < 0:
            self.exhausted = f"more than {self.ALIASES} YAML aliases in the policy set"
        elif self.bytes < 0:
            self.exhausted = f"policy set larger than {self.BYTES} bytes"
        elif self.deadline is not None and time.thread_time() > self.deadline:
            self.exhausted = f"checking the policy set took more than {self.seconds} s of CPU"
        if self.exhausted:
            raise BudgetExhausted(self.exhausted)


    def over(self):
        """True once the CPU allowance is spent (validation asks between documents)."""
        try:
            self.spend()
        except BudgetExhausted:
            return True
        return False


class BudgetExhausted(Exception):
    """The policy set costs more to parse than its Budget allows."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that only composes nodes (construction is ours, see _build), under a Budget.

    Composition depth is capped (``[`` x 5000 would otherwise end in RecursionError) and every token
    and node is charged to the budget as it is read.
    """

    def __init__(self, stream, budget):
        self.budget = budget
        self._tokens = 0
        self._depth = 0
        super().__init__(stream)

    def fetch_more_tokens(self):
        self._tokens += 1
        if self._tokens % 64 == 0:
            self.budget.spend()  # the clock, every 64 tokens
        return super().fetch_more_tokens()

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.budget.spend(aliases=1)
        else:
            self.budget.spend(nodes=1)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:
                raise _TooBig(event, f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
    def __init__(self, loader, filename, budget):
        self.loader = loader
        self.filename = filename
        self.budget = budget
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
        if self.count % 64 == 0:
            self.budget.spend(nodes=64)  # expanded aliases are built again: charge what is built
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


def _position(text, index):
    """1-based (line, col) of a character index."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load(text, filename="-", budget=None):
    """Parse one policy file.

    Args:
        text: the YAML text.
        filename: used in error messages.
        budget: the Budget of the whole set being parsed (default: a fresh one for this file).

    Returns:
        (document or None, Marks, [PolicyError]): every problem found, each with line:col. Raises
        BudgetExhausted when the set's budget runs out (the caller reports it once for the set).
    """
    if budget is None:  # one file on its own: its own budget, reported like any other limit
        try:
            return load(text, filename, Budget())
        except BudgetExhausted as exc:
            file, line, col = getattr(exc, "where", (filename, 1, 1))
            return None, Marks(), [PolicyError(file, "$", str(exc), "size", line, col)]
    marks = Marks()
    budget.start()
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return None, marks, [PolicyError(filename, "$", f"file larger than {MAX_FILE_BYTES} bytes", "size", 1, 1)]
    budget.spend(nbytes=size)
    loader = None
    try:
        # the reader checks for control characters, NUL, U+FFFE and lone surrogates when it is built
        loader = _Loader(text, budget)
        if not loader.check_node():
            return None, marks, [PolicyError(filename, "$", "empty file", "yaml", 1, 1)]
        node = loader.get_node()
        if loader.check_node():
            extra = loader.get_node()
            m = extra.start_mark
            return None, marks, [PolicyError(filename, "$", "one YAML document per file", "yaml",
                                             m.line + 1, m.column + 1)]
    except _TooBig as exc:
        m = exc.node.start_mark
        return None, marks, [PolicyError(filename, "$", str(exc), "size", m.line + 1, m.column + 1)]
    except BudgetExhausted as exc:
        m = loader.get_mark() if loader is not None else None
        exc.where = (filename, m.line + 1, m.column + 1) if m else (filename, 1, 1)
        raise
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        what = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return None, marks, [PolicyError(filename, "$", f"character {what} is not allowed in policy text",
                                         "yaml", line, col)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(x for x in (exc.context, exc.problem) if x)
        return None, marks, [PolicyError(filename, "$", msg or str(exc), "yaml",
                                         (mark.line + 1) if mark else 0, (mark.column + 1) if mark else 0)]
    except yaml.YAMLError as exc:
        return None, marks, [PolicyError(filename, "$", str(exc), "yaml", 1, 1)]
    except RecursionError:
        return None, marks, [PolicyError(filename, "$", "nesting too deep", "size", 1, 1)]
    finally:
        if loader is not None:
            loader.dispose()
    builder = _Builder(loader, filename, budget)
    try:
        doc = builder.build(node)
    except _TooBig as exc:
        m = exc.node.start_mark
        return None, builder.marks, [PolicyError(filename, "$", str(exc), "size", m.line + 1, m.column + 1)]
    except RecursionError:
        return None, builder.marks, [PolicyError(filename, "$", "nesting too deep", "size", 1, 1)]
    except BudgetExhausted as exc:
        exc.where = (filename, 1, 1)
        raise
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
