"""YAML loader: marks, duplicate keys, YAML 1.1 surprises, limits; error lines file:line:col: path: msg [v]."""
from app.policy import loader
from app.policy.errors import PolicyError


def test_marks_point_at_values():
    doc, marks, errors = loader.load("kind: x\nversion: 1\nrules:\n  - name: a\n    when: {field: f}\n", "r.yaml")
    assert errors == []
    assert marks[("rules", 0, "name")] == (4, 11)
    assert marks[("rules", 0, "when", "field")] == (5, 19)
    assert marks.keys[("rules",)] == (3, 1)


def test_duplicate_keys_rejected_with_both_lines():
    _, _, errors = loader.load("a: 1\nb:\n  c: 1\n  c: 2\n", "d.yaml")
    assert len(errors) == 1
    assert str(errors[0]) == "d.yaml:4:3: $.b.c: duplicate key 'c' (first at line 3) [duplicate-key]"


def test_yaml11_booleans_and_dates_stay_strings():
    doc, _, errors = loader.load("a: yes\nb: off\nc: 2024-01-01\nd: true\ne: 010\nf: 1_000\ng: 12\nh: 1.5\n")
    assert errors == []
    assert doc == {"a": "yes", "b": "off", "c": "2024-01-01", "d": True, "e": "010", "f": "1_000", "g": 12,
                   "h": 1.5}


def test_syntax_error_has_position():
    _, _, errors = loader.load("a: [1, 2\nb: 3\n", "s.yaml")
    assert len(errors) == 1 and errors[0].line >= 1 and errors[0].validator == "yaml"


def test_limits_depth_size_aliases_and_multiple_documents():
    deep = "a: " + "[" * 40 + "]" * 40 + "\n"
    _, _, errors = loader.load(deep, "deep.yaml")
    assert errors and errors[0].validator == "size"
    _, _, errors = loader.load("x" * (loader.MAX_FILE_BYTES + 1), "big.yaml")
    assert errors[0].validator == "size"
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [" + ",".join(["*" + p] * 10) + "]\n" for p, c in zip("abcdefg", "bcdefgh"))
    _, _, errors = loader.load(bomb, "bomb.yaml")
    assert errors and errors[0].validator == "size"
    _, _, errors = loader.load("a: 1\n---\nb: 2\n", "two.yaml")
    assert "one YAML document per file" in errors[0].message
    _, _, errors = loader.load("a: !!python/object:os.system x\n", "tag.yaml")
    assert errors and "tag" in errors[0].message


def test_error_format_and_path_parsing():
    e = PolicyError("p.yaml", ("tiers", 0, "a b"), "bad", "type", 3, 5)
    assert str(e) == "p.yaml:3:5: $.tiers[0]['a b']: bad [type]"
    assert loader.path_from_string("$.tiers[0]['a b'].x") == ("tiers", 0, "a b", "x")
