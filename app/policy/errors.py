"""PolicyError: one problem in a policy set, printed as ``file:line:col: $.path: message [validator]``."""
from dataclasses import dataclass, field


def json_path(path):
    """``$.a.b[0]`` for a path tuple ('a', 'b', 0); keys that are not identifiers are quoted."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(ch.isalnum() or ch in "_-" for ch in str(part)):
            out += f".{part}"
        else:
            out += "[" + repr(str(part)) + "]"
    return out


@dataclass
class PolicyError:
    """One error; ``line``/``col`` are 1-based (0 = unknown, resolved from ``path`` when possible)."""

    file: str = "-"
    path: object = "$"  # a JSON path string or a tuple of keys/indexes
    message: str = ""
    validator: str = "policy"
    line: int = 0
    col: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.path, (tuple, list)):
            self.path = json_path(self.path)

    def __str__(self):
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message} [{self.validator}]"

    def to_dict(self):
        return {"file": self.file, "line": self.line, "column": self.col, "path": self.path,
                "message": self.message, "validator": self.validator, "text": str(self)}
